"""``hone run`` on a generative model: its own stages (``hone.job_types.GENERATIVE_STAGES``).

- load: the decoder (an exported .onnx, the zoo's tiny_gpt, or a ``file.py:factory`` exported with
  its KV cache and checked against PyTorch's greedy tokens);
- verify: the graph's KV-cache path against itself (``hone.generate.loadtest.cache_check``: cached,
  batched, left-padded greedy tokens equal recomputing every prefix without the cache);
- optimize: ort-cpu's verified rewrites (``hone.passes.optimize``, fused and missed patterns
  reported), kept only if greedy decoding gives the loaded decoder's tokens;
- quantize: int4 behind the generative gate (perplexity and greedy-token agreement on held-out text,
  per-MatMul fallback) and the tokens/s race (``hone.quantize.generative``); CPU only;
- serve: a bounded load test of the shipped decoder (the float one unless quantize kept a faster
  candidate): the continuous-batching engine in process at ``LOAD_LEVELS`` concurrent clients;
- ship: the shipped decoder written to ``<out>/generate/model.onnx`` (``hone serve`` serves it).

The web and edge targets are not built for generative models; the report lists them as skipped
with that reason.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from hone.errors import InvalidModelError
from hone.job_types import GENERATE_FOLDER, GenerativeRun, RunOptions
from hone.model import Model

LOAD_LEVELS = (1, 8)
REQUESTS_PER_CLIENT = 4


def run_generative(
    stages: Any,  # hone.job._Stages (not imported: job imports this module)
    source: str | os.PathLike[str] | Model,
    options: RunOptions,
    *,
    quantize: bool,
    serve: bool,
    data: str | os.PathLike[str] | None,
) -> None:
    from hone.generate.decoder import Decoder, read_layout

    report = stages.report
    model = stages.run("load", lambda: _load(source))
    if model is None:
        for name in ("verify", "quantize", "serve", "ship"):
            stages.skip(name, "needs the loaded model, and load failed")
        return
    report.model = model.name
    run = GenerativeRun(layout=read_layout(model))
    report.generate = run
    report.data = "held-out text: " + (str(data) if data else "Python's own documentation (held-out split)")
    decoder = Decoder(model, threads=options.threads)
    from hone.generate.loadtest import cache_check, load_test

    run.cache_check = stages.run(
        "verify",
        lambda: cache_check(decoder),
        fails=lambda check: None if check.equal else check.line(),
        done=lambda check: check.line(),
    )
    optimized = stages.run(
        "optimize",
        lambda: _optimize(model, decoder),
        done=lambda pair: f"{pair[1].nodes_before} -> {pair[1].nodes_after} nodes, greedy tokens unchanged",
    )
    if optimized is not None:
        model, report.optimize = optimized
        decoder = Decoder(model, threads=options.threads)
    shipped = model
    if not quantize:
        stages.skip("quantize", "not asked (--no-quantize)")
    elif options.provider != "cpu":
        stages.skip("quantize", f"int4 is measured on the CPU provider only; {options.provider} was asked")
    else:
        quantized = stages.run(
            "quantize", lambda: _quantize(model, options, data), done=lambda pair: _quantize_line(pair[1])
        )
        if quantized is not None:
            kept, run.quantize = quantized
            if run.quantize.kept != "float":
                shipped, run.shipped = kept, run.quantize.kept
    if serve:
        shipped_decoder = decoder if shipped is model else Decoder(shipped, threads=options.threads)
        run.load_test = stages.run(
            "serve",
            lambda: load_test(shipped_decoder, levels=LOAD_LEVELS, requests_per_client=REQUESTS_PER_CLIENT),
            fails=lambda test: (
                f"{test.leaked_tokens} reserved tokens left after the load test"
                if test.leaked_tokens
                else None
            ),
            done=lambda test: f"{run.shipped} decoder, " + test.line(),
        )
    else:
        stages.skip("serve", "not asked (--no-serve)")
    written = stages.run("ship", lambda: _ship(shipped, options), done=lambda path: f"wrote {path}")
    run.shipped_path = str(written or "")
    for name in ("web", "edge"):
        stages.skip(name, "not built for generative models yet (web and edge bundles of a decoder)")


def _load(source: str | os.PathLike[str] | Model) -> Model:
    from hone.generate.sources import generative_model

    if isinstance(source, Model):
        return source
    model = generative_model(str(source))
    if model is None:
        raise InvalidModelError(f"{source} is not a generative model", model=str(source))
    return model


def _optimize(model: Model, decoder: Any) -> tuple[Model, Any]:
    """ort-cpu's verified rewrites, kept only if greedy decoding gives the loaded model's tokens."""
    from hone.errors import ExecutionError
    from hone.generate.decoder import Decoder
    from hone.passes import optimize

    optimized, result = optimize(model, target="ort-cpu")
    prompts = [[1, 2, 3], [7, 8, 9, 10, 11], [42]]
    steps = max(1, min(16, decoder.layout.max_context - 6))
    if Decoder(optimized).greedy(prompts, steps) != decoder.greedy(prompts, steps):
        raise ExecutionError("the optimized decoder's greedy tokens differ; the loaded one is kept")
    return optimized, result


def _quantize(model: Model, options: RunOptions, data: str | os.PathLike[str] | None) -> tuple[Model, Any]:
    from hone.quantize.generative import quantize_generative

    return quantize_generative(
        model, mode="int4", threads=options.threads, data=None if data is None else str(data)
    )


def _quantize_line(result: Any) -> str:
    rows = ", ".join(
        f"{c.name} perplexity {c.perplexity_increase:+.2%} tokens {c.agreement:.1%}"
        + (f" {c.speedup:.2f}x" if c.speedup else "")
        for c in result.candidates
    )
    return f"kept {result.kept}: {rows}"


def _ship(model: Model, options: RunOptions) -> Path:
    folder = options.out / GENERATE_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    return model.save(folder / "model.onnx", force=options.force)


__all__ = ["LOAD_LEVELS", "run_generative"]
