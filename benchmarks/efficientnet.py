"""efficientnet_lite0 (real ImageNet weights, real photos): what `hone quantize` ships, measured independently.

Run: .venv/bin/python benchmarks/efficientnet.py [--threads 2] [--rounds 5] [--block-s 2]

1. `hone.quantize("efficientnet_lite0")` with its defaults (the zoo's photo crops: 64 calibration
   crops from 4 photos, 112 evaluation crops from 7 others; the gate at 99% top-1 agreement).
2. Independently of the speed gate inside quantize: onnxruntime fp32 (the loaded model,
   ORT_ENABLE_ALL), the shipped model, and plain static INT8 QOperator (no layer kept float, the
   same calibration) with 8-bit weights, with 8-bit weights under onnxruntime's
   ``session.x64quantprecision`` (u8u8 kernels), and with 7-bit weights, batch 1, ``--threads`` threads, one photo
   crop as the input, timed in alternating blocks in this one process (``hone.bench.race``); p50
   of all runs, the per-round medians as the spread, the speedup = fp32 p50 / that system's p50.
   The plain INT8 rows show what this CPU's kernels do: without VNNI, 8-bit u8s8 products saturate
   in int16 (``hone.cpu``).
3. Top-1 agreement of each with fp32 on the held-out evaluation crops (none of their photos was
   used for calibration), and the file sizes.
4. Top-5 classes of fp32 and of the shipped model for the showcase photos, side by side.

Prints tables and writes benchmarks/results/efficientnet-<date>-<cpu>.json (cpu: vnni or avx2-no-vnni,
with the CPU's name and INT8 flags inside).
"""

from __future__ import annotations

import argparse
import datetime as dt
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from hone.bench.compare import machine_summary
from hone.bench.race import race
from hone.cpu import VNNI_FLAGS, cpu_flags, int8_saturates
from hone.passes import optimize
from hone.quantize import quantize
from hone.quantize.calibration import calibration_set
from hone.quantize.int8 import size_bytes, static_int8
from hone.results import write_json
from hone.runtime import Session, SessionConfig
from hone.sources import load
from hone.zoo.imagenet import short_name
from hone.zoo.photos import evaluation_samples, showcase_photos

RESULTS = Path(__file__).parent / "results"
GOALS = {"speedup": 2.0, "agreement": 0.98, "size_ratio": 0.30}


def _top5(logits: np.ndarray) -> list[tuple[int, str, float]]:
    probabilities = np.exp(logits - logits.max())
    probabilities /= probabilities.sum()
    order = np.argsort(-probabilities)[:5]
    return [(int(i), short_name(int(i)), float(probabilities[i])) for i in order]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--block-s", type=float, default=2.0)
    args = parser.parse_args()
    console = Console(width=160)

    float_model = load("efficientnet_lite0")
    shipped, result = quantize("efficientnet_lite0", threads=args.threads)
    console.print(f"hone quantize kept: {result.format} ({'; '.join(result.notes)})", highlight=False)

    optimized, _ = optimize(float_model, target="generic")
    calibration = calibration_set(optimized)
    plain = {"INT8 8-bit": static_int8(optimized, calibration, fmt="qoperator"),
             "INT8 8-bit u8u8": static_int8(optimized, calibration, fmt="qoperator", u8u8=True),
             "INT8 7-bit": static_int8(optimized, calibration, fmt="qoperator", reduce_range=True)}
    models = {"ORT fp32": float_model, "hone shipped": shipped, **plain}
    sessions = {label: Session(model, SessionConfig(threads=args.threads, optimization="all"))
                for label, model in models.items()}
    evaluation = evaluation_samples()
    crop = {"image": evaluation.images[:1]}
    runners = {label: (lambda s=session: s.run(crop)) for label, session in sessions.items()}
    per_round: list[dict[str, float]] = []
    seen = {label: 0 for label in runners}

    def record(_: int, timings: dict[str, list[float]]) -> None:
        per_round.append({label: float(np.median(times[seen[label]:])) for label, times in timings.items()})
        seen.update({label: len(times) for label, times in timings.items()})

    timings = race(runners, rounds=args.rounds, block_s=args.block_s, on_round=record)
    p50 = {label: float(np.median(times)) for label, times in timings.items()}
    speedup = p50["ORT fp32"] / p50["hone shipped"]

    def answers(session: Session) -> np.ndarray:
        return np.concatenate([session.run({"image": evaluation.images[i:i + 16]})[0].argmax(1)
                               for i in range(0, len(evaluation.images), 16)])

    reference = answers(sessions["ORT fp32"])
    agreements = {label: float(np.mean(answers(session) == reference)) for label, session in sessions.items()}
    agreement = agreements["hone shipped"]
    sizes = {label: size_bytes(model) for label, model in models.items()}

    table = Table(title=f"efficientnet_lite0, batch 1, {args.threads} threads, {args.rounds} alternating rounds")
    for column in ("system", "p50 ms", "per-round medians", "speedup", "size", "top-1 agreement"):
        table.add_column(column)
    for label in runners:
        table.add_row(label, f"{p50[label]:.2f}", ", ".join(f"{r[label]:.2f}" for r in per_round),
                      f"{p50['ORT fp32'] / p50[label]:.2f}x", f"{sizes[label] / 1e6:.1f} MB",
                      f"{agreements[label]:.3f} ({len(reference)} held-out crops)")
    console.print(table)

    showcase = []
    top5 = Table(title="top-5, fp32 vs shipped")
    for column in ("photo", "fp32", "shipped"):
        top5.add_column(column)
    for name, pixels in showcase_photos():
        feeds = {"image": pixels[None].astype(np.float32)}
        float_top = _top5(sessions["ORT fp32"].run(feeds)[0][0])
        shipped_top = _top5(sessions["hone shipped"].run(feeds)[0][0])
        showcase.append({"photo": name, "float": float_top, "shipped": shipped_top})
        top5.add_row(name, ", ".join(f"{n} {p:.2f}" for _, n, p in float_top),
                     ", ".join(f"{n} {p:.2f}" for _, n, p in shipped_top))
    console.print(top5)

    size_ratio = sizes["hone shipped"] / sizes["ORT fp32"]
    goals = {"speedup": speedup >= GOALS["speedup"], "agreement": agreement >= GOALS["agreement"],
             "size_ratio": size_ratio <= GOALS["size_ratio"]}
    console.print(f"goals: shipped >= {GOALS['speedup']}x fp32: {goals['speedup']} ({speedup:.2f}x); "
                  f"agreement >= {GOALS['agreement']:.0%}: {goals['agreement']} ({agreement:.3f}); "
                  f"size <= {GOALS['size_ratio']:.0%}: {goals['size_ratio']} ({size_ratio:.1%})", highlight=False)
    RESULTS.mkdir(exist_ok=True)
    saturates = int8_saturates()
    out = RESULTS / f"efficientnet-{dt.date.today().isoformat()}-{'avx2-no-vnni' if saturates else 'vnni'}.json"
    write_json({"cpu": machine_summary()["cpu"], "int8_flags": sorted(cpu_flags() & (VNNI_FLAGS | {"avx2", "avx512bw"})),
                "int8_saturates": saturates, "agreements": agreements, "threads": args.threads, "rounds": args.rounds, "block_s": args.block_s,
                "kept_format": result.format, "kept_float": result.kept_float, "notes": result.notes,
                "data_split": result.data_split, "p50_ms": p50, "per_round_ms": per_round, "speedup": speedup,
                "agreement": agreement, "evaluation_crops": len(reference), "sizes_bytes": sizes,
                "size_ratio": size_ratio, "goals": GOALS, "goals_met": goals, "showcase_top5": showcase,
                "quantize": result}, out, force=True)
    console.print(f"wrote {out}")


if __name__ == "__main__":
    main()
