// hone's web page module: runs the bundled model with onnxruntime-web and says what ran where.
//
// 1. Reads manifest.json (written by `hone export --target web`).
// 2. Creates an onnxruntime-web session: on WebGPU first, on WASM (CPU) when WebGPU is unavailable
//    or fails; `?ep=webgpu` or `?ep=wasm` forces one provider (and fails if it cannot start).
// 3. Runs the bundled sample (text models: tokenizes the sample sentence in this page first), once
//    to warm up and then `?runs=N` times (manifest.runs by default), and compares the outputs with
//    native onnxruntime's, which the bundle carries.
// 4. Reports: document.title becomes "DONE" (or "ERROR: <message>") and #hone-result holds a JSON
//    object: provider, adapter (with isFallbackAdapter: true means software, not GPU speed),
//    output_name, output (the first output, flat), median_ms, first_run_ms, session_ms, ...
//
// window.hone is the page's API: `await hone.ready`, then `await hone.run(feeds)` with feeds
// {name: {data: TypedArray, dims: [...]}} (or ort.Tensor), `hone.tokenize(text)` for text models,
// `hone.imageToTensor(image)` for image models, and `hone.result` (what the page reported).

import * as ort from './ort/ort.webgpu.min.mjs';
import { WordPieceTokenizer, imageToTensor } from './preprocess.mjs';

const params = new URLSearchParams(location.search);
const TYPED_ARRAYS = {
  float32: Float32Array, float16: Uint16Array, float64: Float64Array, int64: BigInt64Array,
  int32: Int32Array, int8: Int8Array, uint8: Uint8Array, bool: Uint8Array,
};

let resolveReady, rejectReady;
const hone = {
  ort,
  ready: new Promise((resolve, reject) => { resolveReady = resolve; rejectReady = reject; }),
  result: null,
  run: async () => { throw new Error('the model is still loading: await hone.ready first'); },
};
hone.ready.catch(() => {});  // reported on the page; a caller that awaits it still sees the error
window.hone = hone;

async function fetchOk(url) {
  const response = await fetch(url);
  if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
  return response;
}

async function describeAdapter() {
  if (!('gpu' in navigator)) return { available: false, reason: 'navigator.gpu is missing (WebGPU off in this browser)' };
  let adapter;
  try {
    adapter = await navigator.gpu.requestAdapter();
  } catch (error) {
    return { available: false, reason: `requestAdapter failed: ${error.message}` };
  }
  if (!adapter) return { available: false, reason: 'requestAdapter returned no adapter' };
  const info = adapter.info || {};
  return {
    available: true,
    vendor: info.vendor || '', architecture: info.architecture || '', device: info.device || '',
    description: info.description || '',
    isFallbackAdapter: Boolean(info.isFallbackAdapter ?? adapter.isFallbackAdapter ?? false),
    shaderF16: adapter.features.has('shader-f16'),
  };
}

// The model files to try on a provider: the fp16 variant on WebGPU only where the adapter has
// shader-f16 (SwiftShader has not), and always the float32 model after it.
function modelFiles(manifest, provider, adapter, notes) {
  const preferred = manifest.models[provider];
  if (preferred === manifest.models.wasm) return [preferred];
  if (!adapter.shaderF16) {
    notes.push(`${preferred} skipped: the WebGPU adapter has no shader-f16, float32 runs instead`);
    return [manifest.models.wasm];
  }
  return [preferred, manifest.models.wasm];
}

async function createSession(manifest, requested, adapter) {
  const order = requested ? [requested] : ['webgpu', 'wasm'];
  const failures = [];
  const notes = [];
  for (const provider of order) {
    const options = {
      executionProviders: [provider],
      graphOptimizationLevel: 'all',
      externalData: manifest.external_data.map((name) => ({ path: name, data: `./${name}` })),
    };
    for (const modelFile of modelFiles(manifest, provider, adapter, notes)) {
      const started = performance.now();
      try {
        const session = await ort.InferenceSession.create(`./${modelFile}`, options);
        return { session, provider, modelFile, sessionMs: performance.now() - started, failures, notes };
      } catch (error) {
        failures.push(`${provider} (${modelFile}): ${String(error.message || error).split('\n')[0]}`);
      }
    }
  }
  throw new Error(`no execution provider could load the model (${failures.join('; ')})`);
}

async function readTensor(spec) {
  const bytes = await (await fetchOk(`./${spec.file}`)).arrayBuffer();
  const Typed = TYPED_ARRAYS[spec.dtype];
  if (!Typed) throw new Error(`the sample tensor ${spec.name} has dtype ${spec.dtype}, which this page cannot read`);
  return { name: spec.name, dtype: spec.dtype, dims: spec.shape, data: new Typed(bytes) };
}

function halfToFloat(bits) {
  const sign = bits & 0x8000 ? -1 : 1;
  const exponent = (bits >> 10) & 0x1f;
  const fraction = bits & 0x3ff;
  if (exponent === 0) return sign * 2 ** -14 * (fraction / 1024);
  if (exponent === 31) return fraction ? NaN : sign * Infinity;
  return sign * 2 ** (exponent - 15) * (1 + fraction / 1024);
}

function toNumbers(tensor) {
  if (tensor.type === 'float16' && tensor.data instanceof Uint16Array) return Array.from(tensor.data, halfToFloat);
  return Array.from(tensor.data, Number);
}

function toOrtTensor(name, value, inputTypes) {
  if (value instanceof ort.Tensor) return value;
  if (!value || !value.data || !value.dims) throw new Error(`input ${name}: give {data: TypedArray, dims: [...]} or an ort.Tensor`);
  return new ort.Tensor(value.type || inputTypes[name] || 'float32', value.data, value.dims);
}

function median(values) {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2;
}

function maxAbsDifference(actual, expected) {
  if (actual.length !== expected.length) return Infinity;
  let worst = 0;
  for (let i = 0; i < actual.length; i += 1) {
    const difference = Math.abs(actual[i] - expected[i]);
    if (!(difference <= worst)) worst = difference;  // NaN counts as the worst
  }
  return worst;
}

function show(rows, status) {
  const table = document.getElementById('hone-summary');
  table.replaceChildren();
  for (const [label, value, cls] of rows) {
    const row = table.insertRow();
    const th = document.createElement('th');
    th.textContent = label;
    row.appendChild(th);
    const td = row.insertCell();
    td.textContent = value;
    if (cls) td.className = cls;
  }
  document.getElementById('hone-title').textContent = status;
}

async function main() {
  const manifest = await (await fetchOk('./manifest.json')).json();
  const requested = params.get('ep');
  if (requested && !['webgpu', 'wasm'].includes(requested)) throw new Error(`?ep=${requested}: choose webgpu or wasm`);
  const runs = Number(params.get('runs') || manifest.runs);
  if (!Number.isInteger(runs) || runs < 1) throw new Error(`?runs=${params.get('runs')}: give a whole number of runs, at least 1`);

  // ort.env.wasm.wasmPaths stays unset: it defaults to the folder ort.webgpu.min.mjs came from.
  const adapter = await describeAdapter();
  const { session, provider, modelFile, sessionMs, failures, notes } = await createSession(manifest, requested, adapter);

  const sample = await Promise.all(manifest.sample.inputs.map(readTensor));
  const feeds = Object.fromEntries(sample.map((t) => [t.name, t]));
  const inputTypes = Object.fromEntries(manifest.inputs.map((spec) => [spec.name, spec.dtype]));
  let tokenizer = null;
  let tokenizerMatchesSample = null;
  if (manifest.preprocessing.kind === 'text' && manifest.preprocessing.tokenizer) {
    tokenizer = await WordPieceTokenizer.load(`./${manifest.preprocessing.tokenizer}`, { maxLength: manifest.preprocessing.max_length });
    const encoded = tokenizer.encode(manifest.sample.text);
    tokenizerMatchesSample = encoded.input_ids.length === feeds.input_ids.data.length
      && encoded.input_ids.every((id, i) => BigInt(id) === feeds.input_ids.data[i]);
    for (const [name, ids] of Object.entries(encoded)) {
      if (feeds[name]) feeds[name] = { name, dtype: 'int64', dims: [1, ids.length], data: BigInt64Array.from(ids, BigInt) };
    }
  }

  hone.run = async (given) => {
    const ortFeeds = Object.fromEntries(Object.entries(given).map(([name, value]) => [name, toOrtTensor(name, value, inputTypes)]));
    const outputs = await session.run(ortFeeds);
    return Object.fromEntries(Object.entries(outputs).map(([name, t]) => [name, { type: t.type, dims: t.dims, data: t.data }]));
  };
  if (tokenizer) hone.tokenize = (text) => tokenizer.encode(text);
  if (manifest.preprocessing.kind === 'image') hone.imageToTensor = (image) => imageToTensor(image, manifest.preprocessing);

  const sampleFeeds = Object.fromEntries(Object.values(feeds).map((t) => [t.name, { data: t.data, dims: t.dims, type: t.dtype }]));
  let started = performance.now();
  let outputs = await hone.run(sampleFeeds);
  const firstRunMs = performance.now() - started;
  const times = [];
  for (let i = 0; i < runs; i += 1) {
    started = performance.now();
    outputs = await hone.run(sampleFeeds);
    times.push(performance.now() - started);
  }

  const compared = [];
  for (const spec of manifest.sample.expected) {
    const expected = toNumbers({ type: spec.dtype, data: (await readTensor(spec)).data });
    const actual = toNumbers(outputs[spec.name]);
    compared.push({ name: spec.name, shape: outputs[spec.name].dims, max_abs_error_vs_native: maxAbsDifference(actual, expected) });
  }
  const first = manifest.outputs[0].name;
  const result = {
    model: manifest.model,
    provider,
    requested_provider: requested,
    model_file: modelFile,
    fallback_reason: failures.length ? failures.join('; ') : null,
    notes,
    adapter,
    ort_version: ort.env.versions?.web || manifest.ort_web_version,
    cross_origin_isolated: self.crossOriginIsolated,
    wasm_threads: ort.env.wasm.numThreads ?? null,
    output_name: first,
    output_shape: outputs[first].dims,
    output: toNumbers(outputs[first]),
    outputs: compared,
    max_abs_error_vs_native: Math.max(...compared.map((c) => c.max_abs_error_vs_native)),
    tokenizer_matches_sample: tokenizerMatchesSample,
    runs,
    times_ms: times,
    median_ms: median(times),
    first_run_ms: firstRunMs,
    session_ms: sessionMs,
    placement: manifest.placement,
  };
  hone.result = result;
  document.getElementById('hone-result').textContent = JSON.stringify(result);

  const software = adapter.available && adapter.isFallbackAdapter;
  const where = provider === 'webgpu'
    ? `WebGPU on ${[adapter.vendor, adapter.architecture, adapter.description].filter(Boolean).join(' ') || 'an adapter'}${software ? ' (software adapter: not GPU speed)' : ''}`
    : 'WASM on the CPU';
  const cpuOps = manifest.placement.cpu.map((g) => `${g.op_type} ×${g.nodes}`).join(', ');
  show([
    ['model', `${manifest.model} (${modelFile})`],
    ['ran on', where, software ? 'warn' : ''],
    ['WebGPU', adapter.available ? `adapter ${adapter.vendor} ${adapter.architecture}, isFallbackAdapter ${adapter.isFallbackAdapter}` : adapter.reason],
    ['fallback', result.fallback_reason || 'none'],
    ...notes.map((note) => ['note', note, 'warn']),
    ['placement', provider === 'webgpu' ? (cpuOps ? `on the CPU: ${cpuOps}` : 'every op on WebGPU (static check)') : 'every op on WASM'],
    ['session', `${sessionMs.toFixed(1)} ms`],
    ['first run', `${firstRunMs.toFixed(1)} ms`],
    [`median of ${runs}`, `${result.median_ms.toFixed(2)} ms`],
    ['vs native onnxruntime', `max abs error ${result.max_abs_error_vs_native.toExponential(2)}`,
      result.max_abs_error_vs_native < 1e-2 ? 'ok' : 'bad'],
    ['output', `${first} [${outputs[first].dims.join(', ')}]: ${result.output.slice(0, 5).map((v) => v.toFixed(4)).join(', ')}, …`],
    ...(tokenizer ? [['tokenizer', `"${manifest.sample.text}" → ${feeds.input_ids.data.length} tokens, same as native: ${tokenizerMatchesSample}`]] : []),
  ], `hone: ${manifest.model} on ${provider}`);
  resolveReady(result);
  document.title = 'DONE';
}

main().catch((error) => {
  const message = String(error?.message || error).split('\n')[0];
  hone.result = { error: message };
  document.getElementById('hone-result').textContent = JSON.stringify(hone.result);
  show([['error', message, 'bad']], 'hone: error');
  rejectReady(error);
  document.title = `ERROR: ${message}`;
});
