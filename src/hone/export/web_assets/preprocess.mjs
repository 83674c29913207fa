// Preprocessing that runs in the page, so raw data (an image, a sentence) becomes model inputs.
//
// - imageToTensor(image, preprocessing): an <img>, <canvas>, ImageBitmap or ImageData drawn at the
//   model's size, RGB (or gray), pixels / 255, then (x - mean) / std per channel, NCHW float32.
// - WordPieceTokenizer: the BERT tokenizer of a Hugging Face tokenizer.json (BertNormalizer,
//   BertPreTokenizer, WordPiece, [CLS] ... [SEP]), for one sentence. Written here because
//   onnxruntime-web has no tokenizer and the bundle must not fetch one from a CDN; the tests compare
//   it with the `tokenizers` library on the same tokenizer.json.

export function imageToTensor(image, preprocessing) {
  const [height, width] = preprocessing.size;
  let pixels;
  if (typeof ImageData !== 'undefined' && image instanceof ImageData && image.width === width && image.height === height) {
    pixels = image.data;
  } else {
    const canvas = new OffscreenCanvas(width, height);
    const context = canvas.getContext('2d', { willReadFrequently: true });
    if (typeof ImageData !== 'undefined' && image instanceof ImageData) {
      const source = new OffscreenCanvas(image.width, image.height);
      source.getContext('2d').putImageData(image, 0, 0);
      context.drawImage(source, 0, 0, width, height);
    } else {
      context.drawImage(image, 0, 0, width, height);
    }
    pixels = context.getImageData(0, 0, width, height).data;
  }
  const gray = preprocessing.channels === 'gray';
  const channels = gray ? 1 : 3;
  const mean = preprocessing.mean || new Array(channels).fill(0);
  const std = preprocessing.std || new Array(channels).fill(1);
  const plane = width * height;
  const data = new Float32Array(channels * plane);
  for (let i = 0; i < plane; i += 1) {
    const [r, g, b] = [pixels[4 * i], pixels[4 * i + 1], pixels[4 * i + 2]];
    if (gray) {
      // ITU-R 601 luma, what PIL's convert("L") uses.
      data[i] = ((r * 299 + g * 587 + b * 114) / 1000 / 255 - mean[0]) / std[0];
    } else {
      data[i] = (r / 255 - mean[0]) / std[0];
      data[plane + i] = (g / 255 - mean[1]) / std[1];
      data[2 * plane + i] = (b / 255 - mean[2]) / std[2];
    }
  }
  return { data, dims: [1, channels, height, width], type: 'float32' };
}

const isWhitespace = (ch) => /\s/u.test(ch);
const isControl = (ch) => ch !== '\t' && ch !== '\n' && ch !== '\r' && /\p{Cc}|\p{Cf}/u.test(ch);
// BERT counts every ASCII non-alphanumeric printable as punctuation, plus Unicode's P categories.
const isPunctuation = (ch) => {
  const code = ch.codePointAt(0);
  return (code >= 33 && code <= 47) || (code >= 58 && code <= 64) || (code >= 91 && code <= 96)
    || (code >= 123 && code <= 126) || /\p{P}/u.test(ch);
};
const isChinese = (code) => (code >= 0x4e00 && code <= 0x9fff) || (code >= 0x3400 && code <= 0x4dbf)
  || (code >= 0x20000 && code <= 0x2a6df) || (code >= 0x2a700 && code <= 0x2b73f)
  || (code >= 0x2b740 && code <= 0x2b81f) || (code >= 0x2b820 && code <= 0x2ceaf)
  || (code >= 0xf900 && code <= 0xfaff) || (code >= 0x2f800 && code <= 0x2fa1f);

export class WordPieceTokenizer {
  static async load(url, options = {}) {
    const response = await fetch(url);
    if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
    return new WordPieceTokenizer(await response.json(), options);
  }

  constructor(tokenizerJson, { maxLength } = {}) {
    const model = tokenizerJson.model || {};
    if (model.type !== 'WordPiece') throw new Error(`tokenizer.json has a ${model.type} model; this page reads WordPiece only`);
    this.vocab = new Map(Object.entries(model.vocab));
    this.unk = model.unk_token || '[UNK]';
    this.prefix = model.continuing_subword_prefix ?? '##';
    this.maxCharsPerWord = model.max_input_chars_per_word || 100;
    const normalizer = tokenizerJson.normalizer || {};
    this.cleanText = normalizer.clean_text ?? true;
    this.chineseChars = normalizer.handle_chinese_chars ?? true;
    this.lowercase = normalizer.lowercase ?? true;
    this.stripAccents = normalizer.strip_accents ?? this.lowercase;  // BERT: null means "as lowercase"
    this.maxLength = maxLength || tokenizerJson.truncation?.max_length || 512;
    for (const token of ['[CLS]', '[SEP]', this.unk]) {
      if (!this.vocab.has(token)) throw new Error(`tokenizer.json has no ${token} token`);
    }
  }

  normalize(text) {
    let out = '';
    for (const ch of text) {
      const code = ch.codePointAt(0);
      if (this.cleanText && (code === 0 || code === 0xfffd || isControl(ch))) continue;
      if (this.cleanText && isWhitespace(ch)) { out += ' '; continue; }
      if (this.chineseChars && isChinese(code)) { out += ` ${ch} `; continue; }
      out += ch;
    }
    if (this.stripAccents) out = out.normalize('NFD').replace(/\p{Mn}/gu, '');
    if (this.lowercase) out = out.toLowerCase();
    return out;
  }

  preTokenize(text) {
    const words = [];
    let current = '';
    for (const ch of text) {
      if (isWhitespace(ch)) {
        if (current) words.push(current);
        current = '';
      } else if (isPunctuation(ch)) {
        if (current) words.push(current);
        words.push(ch);
        current = '';
      } else {
        current += ch;
      }
    }
    if (current) words.push(current);
    return words;
  }

  wordPiece(word) {
    const chars = Array.from(word);
    if (chars.length > this.maxCharsPerWord) return [this.unk];
    const pieces = [];
    let start = 0;
    while (start < chars.length) {
      let end = chars.length;
      let piece = null;
      while (start < end) {
        const candidate = (start > 0 ? this.prefix : '') + chars.slice(start, end).join('');
        if (this.vocab.has(candidate)) { piece = candidate; break; }
        end -= 1;
      }
      if (piece === null) return [this.unk];  // the whole word becomes [UNK], as in BERT
      pieces.push(piece);
      start = end;
    }
    return pieces;
  }

  tokens(text) {
    const pieces = this.preTokenize(this.normalize(text)).flatMap((word) => this.wordPiece(word));
    return ['[CLS]', ...pieces.slice(0, Math.max(0, this.maxLength - 2)), '[SEP]'];
  }

  // {input_ids, attention_mask, token_type_ids} for one sentence, as plain arrays of numbers.
  encode(text) {
    const input_ids = this.tokens(text).map((token) => this.vocab.get(token));
    return { input_ids, attention_mask: input_ids.map(() => 1), token_type_ids: input_ids.map(() => 0) };
  }
}
