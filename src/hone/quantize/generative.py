"""hone quantize for a generative model: INT4 weight-only or dynamic INT8, behind a generative gate.

The flow, for ``quantize_generative(decoder)``:

1. measure the float decoder on held-out text (``hone.generate.evaluate``): perplexity, and its
   greedy continuations of N prompts;
2. build the mode's candidates: ``int4`` -> RTN and HQQ (``weight_only.py``, block size a flag);
   ``int8`` -> dynamic INT8 of the MatMuls (``int8.dynamic_int8``);
3. judge each: perplexity increase <= the budget and teacher-forced greedy-token agreement >= the
   budget (default ``perplexity=+3%,tokens=95%``);
4. a failing candidate keeps MatMuls float: each MatMul is quantized alone and ranked by the
   perplexity increase it causes, then the worst 1, 2, 4, ... stay float until the candidate
   passes (at most half of them);
5. race the float decoder and every passing candidate at one sequence (greedy decoding of
   ``SPEED_TOKENS`` tokens, prefill included), interleaved A B C A B C for ``SPEED_ROUNDS`` rounds,
   and keep the fastest only if it beats float by ``MIN_SPEEDUP`` in every round. Otherwise the
   float decoder is kept and the report says why.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from hone.errors import OptionError
from hone.generate.decoder import Decoder, is_generative
from hone.generate.evaluate import EvalText, Reference, decode_seconds, eval_text, quality, reference
from hone.model import Model
from hone.quantize.int8 import dynamic_int8, size_bytes
from hone.quantize.speed_gate import MIN_SPEEDUP
from hone.quantize.types import GenerativeCandidate, GenerativeQuantizeResult
from hone.quantize.weight_only import DEFAULT_BLOCK_SIZE, Int4Method, gemm_as_matmul, int4, int4_matmuls

logger = logging.getLogger(__name__)

GENERATIVE_MODES = ("int4", "int8")
SPEED_TOKENS = 128  # shorter runs (~50 ms) were within this machine's noise
SPEED_ROUNDS = 5


@dataclass(frozen=True)
class GenerativeBudget:
    """How far a candidate may move from the float decoder."""

    max_perplexity_increase: float = 0.03  # relative: +3%
    min_token_agreement: float = 0.95

    @classmethod
    def parse(cls, text: str | None) -> GenerativeBudget:
        """``"perplexity=+3%,tokens=95%"`` (either part; percents or fractions)."""
        if not text:
            return cls()
        values: dict[str, float] = {}
        keys = {"perplexity": "max_perplexity_increase", "tokens": "min_token_agreement"}
        for part in text.split(","):
            key, _, raw = part.strip().partition("=")
            match = re.fullmatch(r"\+?([0-9]*\.?[0-9]+)(%?)", raw.strip())
            if key not in keys or match is None:
                raise OptionError(
                    f"budget part {part.strip()!r} is not perplexity=+N% or tokens=N% "
                    "(a generative model's budget, e.g. --budget perplexity=+3%,tokens=95%)"
                )
            value = float(match.group(1)) / (100.0 if match.group(2) else 1.0)
            values[keys[key]] = value
        return cls(**values)

    def line(self) -> str:
        ppl, tokens = self.max_perplexity_increase, self.min_token_agreement
        return f"perplexity +{ppl:.1%} at most, greedy tokens >= {tokens:.0%} equal"


@dataclass
class _Judge:
    text: EvalText
    ref: Reference
    budget: GenerativeBudget
    threads: int | None

    def candidate(self, name: str, model: Model, kept_float: list[str]) -> GenerativeCandidate:
        measured = quality(Decoder(model, threads=self.threads), self.text, self.ref)
        failures = []
        if measured.perplexity_increase > self.budget.max_perplexity_increase:
            failures.append(f"perplexity +{measured.perplexity_increase:.2%}")
        if measured.agreement < self.budget.min_token_agreement:
            failures.append(f"tokens {measured.agreement:.1%} equal")
        return GenerativeCandidate(
            name=name,
            perplexity=measured.perplexity,
            perplexity_increase=measured.perplexity_increase,
            agreement=measured.agreement,
            passed=not failures,
            reason="; ".join(failures) or "within the budget",
            kept_float=kept_float,
            size_bytes=size_bytes(model),
        )


def quantize_generative(
    model: Model,
    *,
    mode: str = "int4",
    block_size: int = DEFAULT_BLOCK_SIZE,
    budget: GenerativeBudget | str | None = None,
    data: str | None = None,
    threads: int | None = None,
    measure_speed: bool = True,
) -> tuple[Model, GenerativeQuantizeResult]:
    """Quantize a decoder; returns the kept Model (the float one when nothing passed or was faster)."""
    if not is_generative(model):
        raise OptionError(
            f"--mode {mode} is for generative models (exported with `hone export --target generate`); "
            f"{model.name} is not one: use --mode static|dynamic|fp16"
        )
    if mode not in GENERATIVE_MODES:
        raise OptionError(f"--mode {mode}: a generative model takes --mode int4 or int8 (or auto: int4)")
    chosen = budget if isinstance(budget, GenerativeBudget) else GenerativeBudget.parse(budget)
    began = time.perf_counter()
    float_model = gemm_as_matmul(model)  # the same arithmetic; what the int4 quantizer reads
    decoder = Decoder(model, threads=threads)
    text = eval_text(decoder, data)
    judge = _Judge(text, reference(decoder, text), chosen, threads)

    def build(name: str, exclude: tuple[str, ...] = (), include: tuple[str, ...] | None = None) -> Model:
        if name == "int8-dynamic":
            names = tuple(int4_matmuls(float_model)) if include is not None else ()
            skipped = exclude if include is None else tuple(n for n in names if n not in include)
            return dynamic_int8(float_model, exclude=list(skipped), op_types=("MatMul",))
        method: Int4Method = "rtn" if name == "int4-rtn" else "hqq"
        return int4(float_model, method=method, block_size=block_size, exclude=exclude, include=include)

    names = ["int4-rtn", "int4-hqq"] if mode == "int4" else ["int8-dynamic"]
    result = GenerativeQuantizeResult(
        model=model.name,
        mode=mode,
        block_size=block_size if mode == "int4" else None,
        budget=chosen.line(),
        data=text.description,
        float_perplexity=judge.ref.perplexity,
        size_bytes_before=size_bytes(model),
    )
    passing: list[tuple[GenerativeCandidate, Model]] = []
    for name in names:
        built = build(name)
        judged = judge.candidate(name, built, [])
        if not judged.passed:
            judged, built = _fall_back(name, (judged, built), build, judge, float_model, result.notes)
        result.candidates.append(judged)
        if judged.passed:
            passing.append((judged, built))
    kept_model = model
    if not passing:
        result.notes.append(f"no {mode} candidate met the budget ({chosen.line()}); the float model is kept")
    elif not measure_speed:
        kept, kept_model = min(passing, key=lambda pair: pair[0].size_bytes)
        kept.chosen = True
        result.notes.append("speed not measured (--no-speed): the smallest passing candidate is kept")
    else:
        kept_model = _race(model, passing, text, threads, result)
    result.kept = next((c.name for c in result.candidates if c.chosen), "float")
    result.size_bytes_after = size_bytes(kept_model)
    result.seconds = time.perf_counter() - began
    return kept_model, result


def _fall_back(
    name: str,
    failed: tuple[GenerativeCandidate, Model],
    build: Callable[..., Model],
    judge: _Judge,
    float_model: Model,
    notes: list[str],
) -> tuple[GenerativeCandidate, Model]:
    """Keep the MatMuls whose quantization hurts most in float: 1, 2, 4, ... until the budget holds."""
    layers = int4_matmuls(float_model)
    ranked = []
    for layer in layers:
        alone = judge.candidate(name, build(name, include=(layer,)), [])
        ranked.append((alone.perplexity_increase + (1.0 - alone.agreement), layer))
    ranked.sort(reverse=True)
    count = 1
    last = failed
    while count <= max(1, len(layers) // 2):
        exclude = tuple(layer for _, layer in ranked[:count])
        built = build(name, exclude=exclude)
        judged = judge.candidate(name, built, list(exclude))
        last = (judged, built)
        if judged.passed:
            notes.append(f"{name}: {count} of {len(layers)} MatMuls kept float to meet the budget")
            return last
        count *= 2
    notes.append(
        f"{name}: still over the budget with {len(last[0].kept_float)} of {len(layers)} MatMuls float"
    )
    return last


def _race(
    model: Model,
    passing: list[tuple[GenerativeCandidate, Model]],
    text: EvalText,
    threads: int | None,
    result: GenerativeQuantizeResult,
) -> Model:
    """Tokens/s at one sequence, interleaved rounds; the fastest candidate if it wins every round."""
    contenders = [("float", Decoder(model, threads=threads))]
    contenders += [(c.name, Decoder(m, threads=threads)) for c, m in passing]
    prompt = text.prompts[0].tolist()
    tokens = min(SPEED_TOKENS, contenders[0][1].layout.max_context - len(prompt))
    for _, decoder in contenders:
        decode_seconds(decoder, prompt, 4)  # warm-up: first runs allocate
    seconds: dict[str, list[float]] = {name: [] for name, _ in contenders}
    for _ in range(SPEED_ROUNDS):
        for name, decoder in contenders:
            seconds[name].append(decode_seconds(decoder, prompt, tokens))
    float_s = np.asarray(seconds["float"])
    result.float_tokens_per_s = tokens / float(np.median(float_s))
    best: tuple[float, GenerativeCandidate, Model] | None = None
    for candidate, built in passing:
        own = np.asarray(seconds[candidate.name])
        candidate.tokens_per_s = tokens / float(np.median(own))
        candidate.speedup = float(np.median(float_s / own))
        if float((float_s / own).min()) >= MIN_SPEEDUP and (best is None or candidate.speedup > best[0]):
            best = (candidate.speedup, candidate, built)
    if best is None:
        result.notes.append(
            f"no passing candidate was {MIN_SPEEDUP:g}x faster than float in each of {SPEED_ROUNDS} rounds "
            f"({tokens} tokens at one sequence); the float model is kept"
        )
        return model
    best[1].chosen = True
    result.speedup = best[0]
    return best[2]


__all__ = ["GENERATIVE_MODES", "GenerativeBudget", "quantize_generative"]
