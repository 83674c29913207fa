"""The ``hone`` command: parses, calls the API, renders results. No logic of its own.

Every HoneError becomes one line on stderr and exit code 2; every command takes ``--json PATH``.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from typer.core import TyperGroup

from hone.errors import HoneError, OptionError
from hone.logs import EscapeControl

app = typer.Typer(
    name="hone",
    help="Take a trained model to its fastest correct deployment, end to end.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
# Piped output gets wide tables instead of rich's 80-column default, so no column is cut.
console = Console() if sys.stdout.isatty() else Console(width=160)
error_console = Console(stderr=True)

ModelArg = Annotated[
    str,
    typer.Argument(
        help=(
            "an .onnx file, a zoo name (efficientnet_lite0, resnet18, resnet50, digits_cnn, minilm), or"
            " file.py:factory"
        )
    ),
]
JsonOption = Annotated[Path | None, typer.Option("--json", help="write the result as JSON to this path")]
ForceOption = Annotated[bool, typer.Option("--force", help="overwrite existing output files")]
InputShapeOption = Annotated[
    list[str] | None,
    typer.Option(
        "--input-shape",
        help="input shape for file.py:factory models, e.g. 1,3,224,224 (repeat per input, NAME:dims)",
    ),
]
DimOption = Annotated[
    list[str] | None, typer.Option("--dim", help="value of a symbolic dim, e.g. sequence=64 (repeatable)")
]
ThreadsOption = Annotated[
    int | None, typer.Option("--threads", help="intra-op threads (default: physical cores)")
]
DataOption = Annotated[
    str | None,
    typer.Option(
        "--data",
        help=(
            "sample data: .npz (one array per input, samples along a new first axis), a folder of "
            ".npz or images, or a .txt (one text per line); used to verify, calibrate, gate and benchmark"
        ),
    ),
]
ProviderOption = Annotated[str, typer.Option("--provider", help="cpu | cuda | tensorrt")]


@app.callback()
def _configure(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="show info logs")] = False,
) -> None:
    handler = RichHandler(console=error_console, show_path=False, show_time=False)
    handler.addFilter(EscapeControl())  # client text in serve's logs never reaches the terminal raw
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING, format="%(message)s", handlers=[handler]
    )


@app.command()
def info(
    model: ModelArg,
    input_shape: InputShapeOption = None,
    json_path: JsonOption = None,
    force: ForceOption = False,
) -> None:
    """Inputs/outputs with symbolic dims, opset, nodes by op type, parameters, file size."""
    from hone.info import describe
    from hone.report.terminal import info_tables
    from hone.sources import load

    _check_json_target(json_path, force)
    result = describe(load(model, input_shapes=input_shape))
    for table in info_tables(result):
        console.print(table)
    _write_json(result, json_path, force)


@app.command()
def bench(
    model: ModelArg,
    batch: Annotated[
        str | None,
        typer.Option("--batch", help="comma-separated batch sizes (default: 1,8; 1 without a batch axis)"),
    ] = None,
    threads: ThreadsOption = None,
    provider: ProviderOption = "cpu",
    variant: Annotated[
        list[str] | None,
        typer.Option("--variant", help="torch-eager | ort-disabled | ort-all (default: all that apply)"),
    ] = None,
    budget_s: Annotated[
        float, typer.Option("--budget-s", help="time budget per configuration, seconds")
    ] = 3.0,
    rel_tol: Annotated[
        float, typer.Option("--rel-tol", help="stop when the median's 95% CI is within this fraction")
    ] = 0.02,
    input_shape: InputShapeOption = None,
    dim: DimOption = None,
    data: DataOption = None,
    json_path: JsonOption = None,
    force: ForceOption = False,
) -> None:
    """Latency (p50/p90/p99), throughput, peak memory per batch and variant, until the median is stable."""
    from hone.bench import bench as run_bench
    from hone.report.terminal import bench_table

    _check_json_target(json_path, force)
    batches = _parse_batches(batch) if batch else None
    loaded = _load(model, input_shape, dim, data)
    with _progress() as progress:
        task = progress.add_task("bench", total=None)
        result = run_bench(
            loaded,
            batches=batches,
            threads=threads,
            provider=provider,
            variants=variant or None,
            budget_s=budget_s,
            rel_tol=rel_tol,
            on_config=lambda v, b: progress.update(task, description=f"bench {v} batch {b}"),
        )
    console.print(bench_table(result))
    for config in result.unstable:
        error_console.print(
            f"[yellow]warning:[/yellow] {config.variant} batch {config.batch} did not reach a stable "
            f"median in {config.seconds:.1f}s (CI ±{100 * config.median_ci_rel:.1f}%); raise --budget-s"
        )
    # The JSON is the list of configurations (each carries model, variant, provider, batch, threads).
    _write_json(result.configs, json_path, force)


@app.command()
def profile(
    model: ModelArg,
    batch: Annotated[int, typer.Option("--batch", help="batch size to profile")] = 1,
    threads: ThreadsOption = None,
    provider: ProviderOption = "cpu",
    optimization: Annotated[
        str,
        typer.Option(
            "--optimization", help="onnxruntime graph optimizations: all | extended | basic | disabled"
        ),
    ] = "all",
    runs: Annotated[int, typer.Option("--runs", help="profiled runs after warm-up (median per node)")] = 20,
    input_shape: InputShapeOption = None,
    dim: DimOption = None,
    data: DataOption = None,
    json_path: JsonOption = None,
    trace: Annotated[
        Path | None, typer.Option("--trace", help="write a Chrome trace (chrome://tracing, Perfetto)")
    ] = None,
    plot: Annotated[
        Path | None, typer.Option("--plot", help="write the roofline plot (.png or .svg)")
    ] = None,
    force: ForceOption = False,
) -> None:
    """Where the time goes and why: per-node time, FLOPs and bytes, roofline class, recommendations."""
    from hone.profile import profile as run_profile
    from hone.profile import write_trace
    from hone.report.plots import write_profile_plots
    from hone.report.terminal import profile_tables

    for path in (json_path, trace, plot):
        _check_json_target(path, force)
    if runs < 1:
        raise OptionError(f"--runs must be at least 1, got {runs}")
    loaded = _load(model, input_shape, dim, data)
    with _progress() as progress:
        progress.add_task(f"profile {loaded.name} batch {batch}", total=None)
        result = run_profile(
            loaded, batch=batch, threads=threads, provider=provider, optimization=optimization, runs=runs
        )
    for table in profile_tables(result):
        console.print(table)
    if trace is not None:
        write_trace(result, trace, force=force)
        console.print(f"trace: {trace}")
    if plot is not None:
        written = write_profile_plots(result, plot, force=force)
        console.print("plots: " + ", ".join(str(p) for p in written))
    _write_json(result, json_path, force)


@app.command()
def optimize(
    model: ModelArg,
    output: Annotated[Path, typer.Option("-o", "--output", help="where to write the optimized .onnx")],
    target: Annotated[
        str,
        typer.Option("--target", help="ort-cpu | ort-cuda | web | generic (web/generic: standard ops only)"),
    ] = "ort-cpu",
    no_verify: Annotated[
        bool, typer.Option("--no-verify", help="skip checking each pass against the model before it")
    ] = False,
    input_shape: InputShapeOption = None,
    dim: DimOption = None,
    data: DataOption = None,
    json_path: JsonOption = None,
    force: ForceOption = False,
) -> None:
    """Graph rewrites, each verified against the model before it and rolled back when it changes the
    answer."""
    from hone.passes import optimize as run_optimize
    from hone.report.terminal import optimize_table

    _check_json_target(json_path, force)
    from hone.paths import ensure_writable

    ensure_writable(output, force=force)
    loaded = _load(model, input_shape, dim, data, check=not no_verify)
    with _progress() as progress:
        progress.add_task(f"optimize {loaded.name} for {target}", total=None)
        optimized, result = run_optimize(loaded, target=target, verify=not no_verify)
    console.print(optimize_table(result))
    optimized.save(output, force=force)
    console.print(f"wrote {output}")
    _write_json(result, json_path, force)


BudgetOption = Annotated[
    str | None,
    typer.Option(
        "--budget",
        help=(
            "accuracy budget, e.g."
            " top1-drop=0.5,agreement=0.98,cosine-mean=0.995,cosine-min=0.98,channel-error=0.1,exact=0.99"
        ),
    ),
]
SamplesOption = Annotated[
    int, typer.Option("--samples", help="inputs synthesized for the gate when the model has no real data")
]


@app.command()
def quantize(
    model: ModelArg,
    output: Annotated[Path, typer.Option("-o", "--output", help="where to write the kept .onnx")],
    mode: Annotated[
        str,
        typer.Option(
            "--mode",
            help="auto | static | dynamic | fp16 | int4 | int8 (auto: static for Conv models, dynamic for "
            "MatMul models, int4 for generative ones; int4/int8: generative models, weight-only int4 or "
            "dynamic int8 behind a perplexity and greedy-token gate)",
        ),
    ] = "auto",
    block_size: Annotated[
        int, typer.Option("--block-size", help="int4: weights per scale along the input axis (16..256)")
    ] = 32,
    fmt: Annotated[
        str, typer.Option("--format", help="qdq | qoperator | auto (auto: build both, keep the faster)")
    ] = "auto",
    calib: Annotated[str | None, typer.Option("--calib", help="older name of --data")] = None,
    method: Annotated[
        str, typer.Option("--method", help="calibration method: minmax | percentile | entropy")
    ] = "minmax",
    budget: BudgetOption = None,
    per_tensor: Annotated[
        bool, typer.Option("--per-tensor", help="one weight scale per tensor instead of per channel")
    ] = False,
    prefer: Annotated[
        str, typer.Option("--prefer", help="speed | size: keep the fastest or the smallest passing candidate")
    ] = "speed",
    no_speed: Annotated[
        bool, typer.Option("--no-speed", help="skip timing; keep the smallest passing candidate")
    ] = False,
    fp16_io: Annotated[
        bool,
        typer.Option(
            "--fp16-io", help="fp16 mode: make float inputs/outputs float16 too (default: kept float32)"
        ),
    ] = False,
    time_limit_s: Annotated[
        float, typer.Option("--time-limit-s", help="stop trying more float layers after this many seconds")
    ] = 600.0,
    threads: ThreadsOption = None,
    samples: SamplesOption = 200,
    input_shape: InputShapeOption = None,
    dim: DimOption = None,
    data: DataOption = None,
    json_path: JsonOption = None,
    force: ForceOption = False,
) -> None:
    """INT8 or fp16, judged by an accuracy gate on every output (keeping sensitive nodes float) and kept only
    if faster."""
    from hone.paths import ensure_writable
    from hone.quantize import quantize as run_quantize
    from hone.report.terminal import quantize_table

    _check_json_target(json_path, force)
    ensure_writable(output, force=force)
    if calib is not None and data is not None:
        raise OptionError("--calib is an older name of --data; give one of them")
    from hone.generate.sources import generative_model

    decoder_model = None if input_shape else generative_model(model)
    if decoder_model is not None:
        _quantize_generative(
            decoder_model,
            output,
            mode,
            block_size,
            budget,
            data or calib,
            threads,
            no_speed,
            json_path,
            force,
        )
        return
    if mode in ("int4", "int8"):
        raise OptionError(
            f"--mode {mode} is for generative models (`hone export --target generate`); {model} is not one: "
            "use --mode static | dynamic | fp16"
        )
    loaded = _load(model, input_shape, dim, data or calib)
    with _progress() as progress:
        progress.add_task(f"quantize {loaded.name} ({mode})", total=None)
        kept, result = run_quantize(
            loaded,
            mode=mode,
            fmt=fmt,
            method=method,
            budget=budget,
            per_channel=not per_tensor,
            samples=samples,
            threads=threads,
            measure_speed=not no_speed,
            prefer=prefer,
            fp16_io=fp16_io,
            time_limit_s=time_limit_s,
        )
    console.print(quantize_table(result))
    from hone.report.terminal import outputs_table

    per_output = outputs_table(result)
    if per_output is not None:
        console.print(per_output)
    kept.save(output, force=force)
    what = "the float model (no candidate passed both gates)" if not result.kept_quantized else result.format
    console.print(f"wrote {output}: {what}")
    _write_json(result, json_path, force)


def _quantize_generative(
    decoder_model: Any,
    output: Path,
    mode: str,
    block_size: int,
    budget: str | None,
    data: str | None,
    threads: int | None,
    no_speed: bool,
    json_path: Path | None,
    force: bool,
) -> None:
    from hone.quantize.generative import quantize_generative
    from hone.report.terminal import generative_quantize_table

    with _progress() as progress:
        progress.add_task(f"quantize {decoder_model.name} ({mode})", total=None)
        kept, result = quantize_generative(
            decoder_model,
            mode="int4" if mode == "auto" else mode,
            block_size=block_size,
            budget=budget,
            data=data,
            threads=threads,
            measure_speed=not no_speed,
        )
    console.print(generative_quantize_table(result))
    kept.save(output, force=force)
    console.print(f"wrote {output}: {result.kept if result.kept != 'float' else 'the float model'}")
    _write_json(result, json_path, force)


@app.command()
def prune(
    model: ModelArg,
    output: Annotated[Path, typer.Option("-o", "--output", help="where to write the pruned .onnx")],
    sparsity: Annotated[
        float | None,
        typer.Option("--sparsity", help="share of prunable weights set to zero, in [0, 1) (2:4 implies 0.5)"),
    ] = None,
    pattern: Annotated[str, typer.Option("--pattern", help="unstructured | 2:4")] = "unstructured",
    scope: Annotated[str, typer.Option("--scope", help="global | per_layer (unstructured only)")] = "global",
    budget: BudgetOption = None,
    fine_tune: Annotated[
        bool,
        typer.Option(
            "--fine-tune",
            help="retrain briefly with the masks fixed (torch models with training data: digits_cnn)",
        ),
    ] = False,
    fine_tune_epochs: Annotated[int, typer.Option("--fine-tune-epochs", help="epochs of fine-tuning")] = 3,
    exclude: Annotated[
        list[str] | None,
        typer.Option("--exclude", help="weight (initializer) name to keep dense (repeatable)"),
    ] = None,
    ignore_budget: Annotated[
        bool,
        typer.Option(
            "--ignore-budget", help="write the pruned model even when it is outside the accuracy budget"
        ),
    ] = False,
    no_speed: Annotated[bool, typer.Option("--no-speed", help="skip timing the pruned model")] = False,
    threads: ThreadsOption = None,
    samples: SamplesOption = 200,
    input_shape: InputShapeOption = None,
    dim: DimOption = None,
    data: DataOption = None,
    json_path: JsonOption = None,
    force: ForceOption = False,
) -> None:
    """Magnitude pruning (unstructured or 2:4) with a per-layer sparsity report, judged by the accuracy
    gate."""
    from hone.paths import ensure_writable
    from hone.quantize.prune import prune as run_prune
    from hone.report.terminal import prune_table

    _check_json_target(json_path, force)
    ensure_writable(output, force=force)
    loaded = _load(model, input_shape, dim, data)
    with _progress() as progress:
        progress.add_task(f"prune {loaded.name} ({pattern})", total=None)
        _, result = run_prune(
            loaded,
            sparsity=sparsity,
            pattern=pattern,
            scope=scope,
            budget=budget,
            fine_tune=fine_tune,
            fine_tune_epochs=fine_tune_epochs,
            threads=threads,
            measure_speed=not no_speed,
            samples=samples,
            exclude=exclude or (),
            output=output,
            force=force,
            ignore_budget=ignore_budget,
        )
    console.print(prune_table(result))
    _write_json(result, json_path, force)
    if result.not_written is not None:
        raise OptionError(result.not_written)
    console.print(f"wrote {result.written_to}")


@app.command()
def machine(
    threads: ThreadsOption = None,
    remeasure: Annotated[
        bool, typer.Option("--remeasure", help="measure again instead of using the cache")
    ] = False,
    json_path: JsonOption = None,
    force: ForceOption = False,
) -> None:
    """The measured ceilings of this machine: peak GEMM rate and memory bandwidth (cached)."""
    from hone.machine import ceilings
    from hone.report.terminal import machine_table

    _check_json_target(json_path, force)
    with _progress() as progress:
        progress.add_task("measuring machine ceilings (cached after the first time)", total=None)
        result = ceilings(threads, remeasure=remeasure)
    console.print(machine_table(result))
    _write_json(result, json_path, force)


@app.command()
def run(
    model: Annotated[str | None, typer.Argument(help="model (default: efficientnet_lite0)")] = None,
    out: Annotated[
        Path,
        typer.Option(
            "--out", "-o", help="folder for report.json, report.html and the targets serve/, web/, edge/"
        ),
    ] = Path("hone-out"),
    batch: Annotated[
        str | None, typer.Option("--batch", help="comma-separated batch sizes (default 1,8)")
    ] = None,
    threads: ThreadsOption = None,
    provider: ProviderOption = "cpu",
    budget_s: Annotated[
        float, typer.Option("--budget-s", help="bench time budget per configuration, seconds")
    ] = 3.0,
    no_quantize: Annotated[bool, typer.Option("--no-quantize", help="skip the INT8 stage")] = False,
    no_serve: Annotated[
        bool,
        typer.Option("--no-serve", help="skip the serving load test and the model repository <out>/serve"),
    ] = False,
    no_web: Annotated[
        bool, typer.Option("--no-web", help="skip the web bundle (and its page load in Chromium)")
    ] = False,
    no_edge: Annotated[bool, typer.Option("--no-edge", help="skip the edge bundle")] = False,
    input_shape: InputShapeOption = None,
    dim: DimOption = None,
    data: DataOption = None,
    json_path: JsonOption = None,
    force: ForceOption = False,
) -> None:
    """The end-to-end job: load -> verify -> profile -> optimize -> quantize -> bench -> serve -> ship-serve
    -> web -> edge;
    writes report.json and report.html (also when a stage fails: then the exit code is 1), <out>/serve,
    <out>/web, <out>/edge.
    """
    from hone.job import run as run_job
    from hone.job_types import REPORT_HTML, REPORT_JSON
    from hone.report.html import write_html
    from hone.report.terminal import run_view

    _check_json_target(json_path, force)
    batches = _parse_batches(batch) if batch else None
    with _progress(transient=False) as progress:
        report = run_job(
            model,
            out_dir=out,
            batches=batches,
            threads=threads,
            provider=provider,
            input_shapes=input_shape,
            budget_s=budget_s,
            force=force,
            progress=_run_progress(progress),
            quantize=not no_quantize,
            serve=not no_serve,
            web=not no_web,
            edge=not no_edge,
            data=data,
            dims=_parse_dims(dim),
        )
    write_html(report, out / REPORT_HTML)  # the job wrote report.json; both exist before any exit
    for renderable in run_view(report):
        console.print(renderable)
    console.print(f"report: {out / REPORT_HTML} and {out / REPORT_JSON}")
    _write_json(report, json_path, force)
    if not report.passed:
        for stage in report.failed:
            error_console.print(
                f"[red]failed:[/red] {stage.name}: {escape(stage.message)}", highlight=False, soft_wrap=True
            )
        raise typer.Exit(code=1)


def _run_progress(progress: Progress) -> Any:
    """The job's progress callback: one line per stage, updated as it starts, steps and ends."""
    tasks: dict[str, Any] = {}

    def task(stage: str) -> Any:
        if stage not in tasks:
            tasks[stage] = progress.add_task(stage, total=1)
        return tasks[stage]

    def on_progress(stage: str, event: str, detail: str) -> None:
        if event == "start":
            task(stage)
        elif event == "step":
            progress.update(task(stage), description=f"{stage}: {escape(detail)}")
        elif event == "done":
            progress.update(task(stage), completed=1, description=f"{stage} [green]done[/green]")
        elif event == "failed":
            progress.update(task(stage), completed=1, description=f"{stage} [red]failed[/red]")
        elif event == "skipped":
            progress.update(task(stage), completed=1, description=f"{stage} [yellow]skipped[/yellow]")

    return on_progress


@app.command()
def export(
    model: ModelArg,
    output: Annotated[
        Path, typer.Option("-o", "--output", help="output path: an .onnx file (onnx) or a folder (edge, web)")
    ],
    target: Annotated[
        str,
        typer.Option(
            "--target",
            help=(
                "onnx | edge | web | generate (edge: smallest INT8 within the budget, manifest, profile at 1"
                " thread; web: a browser bundle on WebGPU/WASM; generate: a file.py:factory causal LM (or"
                " tiny_gpt) with its KV cache, or a decoder .onnx from elsewhere adopted, for hone serve)"
            ),
        ),
    ] = "onnx",
    budget: BudgetOption = None,
    calib: Annotated[str | None, typer.Option("--calib", help="edge: older name of --data")] = None,
    sparsity: Annotated[
        float | None,
        typer.Option(
            "--sparsity", help="edge: prune this share of weights first, kept only within the budget"
        ),
    ] = None,
    memory_cap_mb: Annotated[
        int | None,
        typer.Option(
            "--memory-cap-mb",
            help="edge: MB of address space the model may add above an idle interpreter (default 256)",
        ),
    ] = None,
    fp16: Annotated[
        bool,
        typer.Option(
            "--fp16", help="web: a float16 model for WebGPU too, kept only if it answers like float32"
        ),
    ] = False,
    context: Annotated[
        int | None,
        typer.Option(
            "--context",
            help=(
                "generate, a decoder .onnx from elsewhere: tokens it was trained for"
                " (default: config.json beside it)"
            ),
        ),
    ] = None,
    input_shape: InputShapeOption = None,
    dim: DimOption = None,
    data: DataOption = None,
    json_path: JsonOption = None,
    force: ForceOption = False,
) -> None:
    """Write the model for a target: onnx as loaded, unchanged; edge as a folder with model.onnx,
    manifest.json,
    profile.json; web as a folder with index.html that runs it in a browser (serve it with `hone serve-web`).
    """
    from hone.export import export as run_export
    from hone.report.terminal import export_view

    _check_json_target(json_path, force)
    if target == "generate":
        from hone.generate.sources import export_to
        from hone.paths import ensure_writable

        path = ensure_writable(output, force=force)
        with _progress() as progress:
            progress.add_task(f"export {model} with its KV cache, greedy tokens checked", total=None)
            exported = export_to(model, path, context=context, force=force)
        console.print(exported, highlight=False, soft_wrap=True)
        return
    if context is not None:
        raise OptionError("--context applies to --target generate only")
    if calib is not None and data is not None:
        raise OptionError("--calib is an older name of --data; give one of them")
    loaded = _load(model, input_shape, dim, data or calib, check=target != "onnx")
    steps = {
        "web": f"export {loaded.name} for the web: optimize, sample, placement check",
        "edge": f"export {loaded.name} for edge: gate, quantize, profile at 1 thread",
    }
    with _progress() as progress:
        if target in steps:
            progress.add_task(steps[target], total=None)
        result = run_export(
            loaded,
            output,
            target=target,
            force=force,
            budget=budget,
            sparsity=sparsity,
            memory_cap_mb=memory_cap_mb,
            fp16=fp16,
        )
    for line in export_view(result):
        console.print(line, highlight=False)
    _write_json(result, json_path, force)


@app.command("serve-web")
def serve_web(
    folder: Annotated[Path, typer.Argument(help="a folder written by `hone export --target web`")],
    port: Annotated[int, typer.Option("--port", help="port to listen on (0: any free port)")] = 8080,
    host: Annotated[str, typer.Option("--host", help="address to bind")] = "127.0.0.1",
) -> None:
    """Serve a web bundle with the MIME types and cross-origin isolation headers onnxruntime-web needs."""
    from hone.export.web_server import WebServer

    server = WebServer(folder, host=host, port=port)
    console.print(f"hone serve-web: {server.folder} on {server.url} (Ctrl-C stops)", highlight=False)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()


@app.command()
def serve(
    model: Annotated[
        str,
        typer.Argument(
            help=(
                "an .onnx file, a zoo name, or a model repository folder"
                " (<repo>/<model>/<version>/model.onnx)"
            )
        ),
    ],
    name: Annotated[
        str | None,
        typer.Option("--name", help="serve a single model under this name (default: zoo name or file stem)"),
    ] = None,
    http_port: Annotated[
        int, typer.Option("--http-port", help="KServe v2 HTTP port (0: any free port)")
    ] = 8000,
    grpc_port: Annotated[
        int, typer.Option("--grpc-port", help="KServe v2 gRPC port (0: any free port)")
    ] = 8001,
    metrics_port: Annotated[
        int, typer.Option("--metrics-port", help="Prometheus metrics port (0: any free port)")
    ] = 8002,
    max_batch_size: Annotated[
        int | None,
        typer.Option("--max-batch-size", help="samples per batch (0 or 1: batching off; default 32)"),
    ] = None,
    max_queue_delay_ms: Annotated[
        float | None,
        typer.Option("--max-queue-delay-ms", help="longest wait for a batch to fill (default 2)"),
    ] = None,
    instances: Annotated[
        int, typer.Option("--instances", help="onnxruntime sessions per model, sharing the cores")
    ] = 1,
    slo_p99_ms: Annotated[
        float | None,
        typer.Option(
            "--slo-p99-ms",
            help=(
                "latency target: choose max batch and queue delay from this model's measured latency-vs-batch"
                " curve, then check them under load"
            ),
        ),
    ] = None,
    token: Annotated[
        str | None,
        typer.Option(
            "--token", envvar="HONE_SERVE_TOKEN", help="bearer token required on every route but health"
        ),
    ] = None,
    model_control_mode: Annotated[
        str,
        typer.Option(
            "--model-control-mode",
            help="none | explicit: explicit allows repository load/unload (Triton's name)",
        ),
    ] = "none",
    max_header_bytes: Annotated[
        int, typer.Option("--max-header-bytes", help="request line and headers, bytes (431 beyond)")
    ] = 64 * 1024,
    max_url_bytes: Annotated[int, typer.Option("--max-url-bytes", help="URL bytes (414 beyond)")] = 8 * 1024,
    header_timeout_s: Annotated[
        float,
        typer.Option("--header-timeout-s", help="seconds a request head may take to arrive (408 beyond)"),
    ] = 10.0,
    max_connections: Annotated[
        int, typer.Option("--max-connections", help="HTTP connections and requests in progress (503 beyond)")
    ] = 1024,
    keep_alive_s: Annotated[
        float,
        typer.Option(
            "--keep-alive-s", help="an idle keep-alive connection is closed after this many seconds"
        ),
    ] = 5.0,
    max_body_bytes: Annotated[
        int,
        typer.Option(
            "--max-body-bytes",
            help="an infer request's body (HTTP, after inflating) or message (gRPC), bytes (413 beyond)",
        ),
    ] = 64 * 1024 * 1024,
    max_inflight_bytes: Annotated[
        int,
        typer.Option(
            "--max-inflight-bytes",
            help=(
                "bytes of all infer requests held at once: bodies read, tensors queued or running, answers"
                " (503 beyond)"
            ),
        ),
    ] = 192 * 1024 * 1024,
    body_timeout_s: Annotated[
        float,
        typer.Option(
            "--body-timeout-s", help="seconds an infer body may take to arrive after its head (408 beyond)"
        ),
    ] = 60.0,
    max_json_bytes: Annotated[
        int,
        typer.Option(
            "--max-json-bytes",
            help="the JSON part of an infer request, bytes (413 beyond; larger tensors go as binary)",
        ),
    ] = 4 * 1024 * 1024,
    host: Annotated[str, typer.Option("--host", help="address to bind")] = "127.0.0.1",
    ray: Annotated[
        bool,
        typer.Option(
            "--ray",
            help=(
                "serve with Ray Serve replicas (HTTP only; `make ray`, then .cache/ray-venv/bin/hone; see"
                " docs/serve-ray.md)"
            ),
        ),
    ] = False,
    replicas: Annotated[
        int,
        typer.Option(
            "--replicas", help="Ray Serve replicas, each with cores // N onnxruntime threads (with --ray)"
        ),
    ] = 1,
    max_sequences: Annotated[
        int,
        typer.Option(
            "--max-sequences", help="generative models: sequences decoding at once (503s wait beyond)"
        ),
    ] = 32,
    max_cached_tokens: Annotated[
        int,
        typer.Option(
            "--max-cached-tokens",
            help="generative models: KV-cache tokens (prompt + max_tokens) reserved over all sequences",
        ),
    ] = 16384,
    max_batched_tokens: Annotated[
        int,
        typer.Option(
            "--max-batched-tokens",
            help="generative models: tokens per iteration (one per decoding sequence, the rest for prompts)",
        ),
    ] = 1024,
    max_waiting: Annotated[
        int,
        typer.Option("--max-waiting", help="generative models: requests waiting for a sequence (503 beyond)"),
    ] = 256,
    batching: Annotated[
        str,
        typer.Option(
            "--batching", help="generative models: continuous | static | sequential (the last two: baselines)"
        ),
    ] = "continuous",
    kv_cache: Annotated[
        str,
        typer.Option(
            "--kv-cache",
            help=(
                "generative models: auto | in-place | padded (auto: in-place when the graph is fused by hone"
                " optimize and answers alike, else padded)"
            ),
        ),
    ] = "auto",
    threads: Annotated[
        int | None,
        typer.Option("--threads", help="generative models: intra-op threads (default: physical cores)"),
    ] = None,
    dim: DimOption = None,
    data: DataOption = None,
) -> None:
    """Serve models over the KServe v2 HTTP and gRPC protocols with dynamic batching, until SIGTERM (drains
    first). A generative model (`hone export --target generate`) is served with continuous batching and
    token streaming: the Triton generate extension and OpenAI's /v1/completions and /v1/chat/completions."""
    from hone.generate.sources import generative_model

    decoder_model = generative_model(model)
    if decoder_model is not None:
        kserve_only = {
            "--grpc-port": grpc_port != 8001,
            "--metrics-port": metrics_port != 8002,
            "--max-batch-size": max_batch_size is not None,
            "--max-queue-delay-ms": max_queue_delay_ms is not None,
            "--instances": instances != 1,
            "--slo-p99-ms": slo_p99_ms is not None,
            "--ray": ray,
            "--model-control-mode": model_control_mode != "none",
            "--dim/--data": bool(dim or data),
            "--max-inflight-bytes": max_inflight_bytes != 192 * 1024 * 1024,
        }
        given = [flag for flag, set_ in kserve_only.items() if set_]
        if given:
            raise OptionError(
                f"{', '.join(given)} apply to KServe models; a generative model is served over HTTP on "
                "--http-port only (metrics on its /metrics; batching: --max-sequences, --batching)"
            )
        from hone.generate.engine import EngineConfig
        from hone.serve.generate_server import GenerateServeOptions, serve_generative
        from hone.serve.limits import ConnectionLimits

        engine = EngineConfig(
            policy=batching,  # type: ignore[arg-type]  # checked by EngineConfig
            max_sequences=max_sequences,
            max_cached_tokens=max_cached_tokens,
            max_batched_tokens=max_batched_tokens,
            max_waiting=max_waiting,
            kv_cache=kv_cache,  # type: ignore[arg-type]  # checked by EngineConfig
        )
        generate_options = GenerateServeOptions(
            decoder_model,
            name or decoder_model.name,
            engine,
            host=host,
            http_port=http_port,
            threads=threads,
            token=token,
            limits=ConnectionLimits(max_header_bytes, max_url_bytes, header_timeout_s),
            # a generative request is all JSON: the smaller of the two body limits holds
            max_body_bytes=min(max_body_bytes, max_json_bytes),
            body_timeout_s=body_timeout_s,
            keep_alive_s=keep_alive_s,
            max_connections=max_connections,
        )
        serve_generative(
            generate_options,
            on_ready=lambda ready: console.print(ready.line(), highlight=False, soft_wrap=True),
        )
        return
    if threads is not None:
        raise OptionError(
            "--threads applies to generative models only; KServe models use onnxruntime's default threads"
        )
    if kv_cache != "auto":
        raise OptionError("--kv-cache applies to generative models only (`hone export --target generate`)")
    from hone.serve.ray_serve import refuse_unsupported

    refuse_unsupported(ray=ray, replicas=replicas, instances=instances, slo_p99_ms=slo_p99_ms, token=token)
    if ray and (dim or data):
        raise OptionError("--dim and --data apply to hone serve without --ray (warm-up and the SLO probe)")
    if ray:
        _serve_on_ray(model, name, replicas, host, http_port, max_batch_size, max_queue_delay_ms)
        return
    from hone.serve.registry import parse_model_control
    from hone.serve.server import ServeOptions
    from hone.serve.server import serve as run_server

    options = ServeOptions(
        model=model,
        name=name,
        host=host,
        http_port=http_port,
        grpc_port=grpc_port,
        metrics_port=metrics_port,
        max_batch_size=max_batch_size,
        max_queue_delay_ms=max_queue_delay_ms,
        instances=instances,
        token=token,
        model_control=parse_model_control(model_control_mode, "--model-control-mode"),
        max_header_bytes=max_header_bytes,
        max_url_bytes=max_url_bytes,
        header_timeout_s=header_timeout_s,
        max_connections=max_connections,
        keep_alive_s=keep_alive_s,
        max_body_bytes=max_body_bytes,
        max_inflight_bytes=max_inflight_bytes,
        body_timeout_s=body_timeout_s,
        max_json_bytes=max_json_bytes,
        slo_p99_ms=slo_p99_ms,
        dims=_parse_dims(dim),
        data=data,
    )
    run_server(
        options,
        on_ready=lambda ready: console.print(ready.line(), highlight=False, soft_wrap=True),
        on_plan=lambda plan: console.print(plan.line(), highlight=False, soft_wrap=True),
    )


@app.command()
def tune(
    model: ModelArg,
    output: Annotated[
        Path, typer.Option("-o", "--output", help="the model repository to write (hone serve runs it as is)")
    ],
    accuracy: Annotated[
        str | None,
        typer.Option(
            "--accuracy",
            help="the accuracy gate's budget, as hone quantize --budget (e.g. agreement=0.99)",
        ),
    ] = None,
    slo_p99_ms: Annotated[
        float | None,
        typer.Option("--slo-p99-ms", help="p99 latency target at every concurrency level, milliseconds"),
    ] = None,
    objective: Annotated[
        str,
        typer.Option(
            "--objective", help="throughput | latency (without --slo-p99-ms: p99 no worse than the defaults)"
        ),
    ] = "throughput",
    concurrency: Annotated[
        str, typer.Option("--concurrency", help="closed-loop clients, one level or a list (default 1,8,32)")
    ] = "1,8,32",
    budget_min: Annotated[
        float, typer.Option("--budget-min", help="minutes the search may take (a cache makes it resumable)")
    ] = 5.0,
    seconds_per_level: Annotated[
        float, typer.Option("--seconds-per-level", help="seconds of load per concurrency level and point")
    ] = 1.5,
    no_cache: Annotated[
        bool, typer.Option("--no-cache", help="measure everything again and keep nothing")
    ] = False,
    provider: ProviderOption = "cpu",
    input_shape: InputShapeOption = None,
    dim: DimOption = None,
    data: DataOption = None,
    json_path: JsonOption = None,
    force: ForceOption = False,
) -> None:
    """Search the model's verified variants, onnxruntime's session options and the server's batching
    together, under an accuracy budget and a latency target; write a model repository for hone serve."""
    from hone.tune import tune as run_tune

    _check_json_target(json_path, force)
    if slo_p99_ms is not None and objective != "throughput":
        raise OptionError("--slo-p99-ms and --objective latency are two targets; give one of them")
    loaded = _load(model, input_shape, dim, data)
    with _progress(transient=True) as progress:
        task = progress.add_task(f"tune {loaded.name}", total=1.0)

        def on_progress(what: str, spent: float) -> None:
            progress.update(task, completed=spent, description=f"tune {loaded.name}: {escape(what)}")

        result = run_tune(
            loaded,
            output,
            dims=_parse_dims(dim),
            accuracy=accuracy,
            slo_p99_ms=slo_p99_ms,
            objective=objective,
            concurrency=_parse_batches(concurrency, flag="--concurrency"),
            budget_min=budget_min,
            seconds_per_level=seconds_per_level,
            force=force,
            provider=provider,
            use_cache=not no_cache,
            progress=on_progress,
        )
    from hone.report.tune_page import write_tune_html
    from hone.tune import TUNE_HTML

    write_tune_html(result, output / TUNE_HTML)
    for note in result.notes:
        console.print(f"note: {escape(note)}", highlight=False, soft_wrap=True)
    console.print(escape(result.line()), highlight=False, soft_wrap=True)
    console.print(
        f"wrote {output} (hone serve {output}); every point: {output / 'tune.json'}, {output / 'tune.html'}"
    )
    _write_json(result, json_path, force)


def _serve_on_ray(
    model: str,
    name: str | None,
    replicas: int,
    host: str,
    http_port: int,
    max_batch_size: int | None,
    max_queue_delay_ms: float | None,
) -> None:
    from hone.serve.ray_serve import RayServeOptions, serve_on_ray

    options = RayServeOptions(model, name, replicas, host, http_port, max_batch_size, max_queue_delay_ms)
    serve_on_ray(options, on_ready=lambda ready: console.print(ready.line(), highlight=False, soft_wrap=True))


class _PipelineGroup(TyperGroup):
    """``hone pipeline MODEL ...`` runs a pipeline; ``hone pipeline simulate ...`` plans one."""

    def parse_args(self, ctx: typer.Context, args: list[str]) -> list[str]:  # type: ignore[override]
        # typer 0.29 carries its own copy of click; its Context is the one the group receives.
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = ["run", *args]
        return super().parse_args(ctx, args)


pipeline_app = typer.Typer(
    cls=_PipelineGroup,
    help=(
        "Split a model into stages on torch.distributed (GPipe, 1F1B) and measure the bubbles; or simulate"
        " one."
    ),
    no_args_is_help=True,
)
app.add_typer(pipeline_app, name="pipeline")

SchedulePipelineOption = Annotated[
    str, typer.Option("--schedule", help="gpipe | 1f1b (simulate: also interleaved)")
]
ModePipelineOption = Annotated[
    str, typer.Option("--mode", help="inference (forward only) | train (forward, backward, SGD step)")
]


@pipeline_app.command("run")
def pipeline_run(
    model: Annotated[
        str,
        typer.Argument(help="a zoo name (transformer_stack, resnet18/50), file.py:factory, or an .onnx file"),
    ],
    stages: Annotated[int, typer.Option("--stages", help="number of stages = processes")] = 2,
    microbatches: Annotated[int, typer.Option("--microbatches", help="micro-batches per step")] = 4,
    schedule: SchedulePipelineOption = "1f1b",
    mode: ModePipelineOption = "inference",
    batch: Annotated[
        int | None,
        typer.Option(
            "--batch", help="samples per step, a multiple of --microbatches (default: one per micro-batch)"
        ),
    ] = None,
    threads: Annotated[
        int | None,
        typer.Option("--threads", help="torch threads per stage (default: physical cores / stages)"),
    ] = None,
    steps: Annotated[
        int,
        typer.Option("--steps", help="steps to run; the first warms up, the median of the rest is reported"),
    ] = 3,
    backend: Annotated[str, typer.Option("--backend", help="gloo (CPU) | nccl (one GPU per stage)")] = "gloo",
    timeout_s: Annotated[
        float, typer.Option("--timeout-s", help="how long a stage may wait for another before all stop")
    ] = 300.0,
    input_shape: InputShapeOption = None,
    dim: DimOption = None,
    data: DataOption = None,
    trace: Annotated[
        Path | None, typer.Option("--trace", help="write the median step's timeline as a Chrome trace")
    ] = None,
    json_path: JsonOption = None,
    force: ForceOption = False,
) -> None:
    """Measure the blocks, partition into stages, run them as processes, check against one process."""
    from hone.pipeline import StageDone, resolve, run_pipeline, write_trace
    from hone.report.terminal import pipeline_summary, pipeline_table

    _check_json_target(json_path, force)
    if trace is not None:
        from hone.paths import ensure_writable

        ensure_writable(trace, force=force)
    source = resolve(model, input_shapes=input_shape, dims=_parse_dims(dim), data=data)
    with _progress() as progress:
        progress.add_task(
            f"pipeline {source.name}: measure blocks, partition, run {stages} stage processes", total=None
        )
        result = run_pipeline(
            source,
            stages=stages,
            microbatches=microbatches,
            schedule=schedule,
            mode=mode,
            batch=batch,
            threads=threads,
            steps=steps,
            timeout_s=timeout_s,
            backend=backend,
        )
    if isinstance(result, StageDone):  # a torchrun rank other than 0: rank 0 prints and writes the result
        console.print(f"stage {result.rank} done; rank 0 reports the run", highlight=False)
        return
    console.print(pipeline_table(result))
    for line in pipeline_summary(result):
        console.print(line, highlight=False)
    if trace is not None:
        write_trace(result, trace, force=True)
        console.print(f"trace: {trace} (open in chrome://tracing or ui.perfetto.dev)")
    _write_json(result, json_path, force)


@pipeline_app.command("simulate")
def pipeline_simulate(
    stages: Annotated[int, typer.Option("--stages", help="pipeline ranks (up to 64)")] = 4,
    microbatches: Annotated[
        int | None,
        typer.Option("--microbatches", help="micro-batches per step (up to 1024); omit with --max-bubble"),
    ] = None,
    schedule: SchedulePipelineOption = "1f1b",
    mode: ModePipelineOption = "train",
    chunks: Annotated[int, typer.Option("--chunks", help="model chunks per rank (interleaved)")] = 1,
    forward_ms: Annotated[
        str,
        typer.Option(
            "--forward-ms",
            help="forward ms per micro-batch: one value, or one per (virtual) stage, comma-separated",
        ),
    ] = "10",
    backward_ms: Annotated[
        str | None, typer.Option("--backward-ms", help="backward ms, same form (default: 2x forward)")
    ] = None,
    activation_mb: Annotated[
        float, typer.Option("--activation-mb", help="MB sent between stages per micro-batch")
    ] = 1.0,
    bandwidth_gbps: Annotated[float, typer.Option("--bandwidth-gbps", help="link bandwidth, GB/s")] = 25.0,
    latency_ms: Annotated[float, typer.Option("--latency-ms", help="link latency, ms")] = 0.01,
    cores: Annotated[
        int | None, typer.Option("--cores", help="ranks share this many cores (default: a device per rank)")
    ] = None,
    max_bubble: Annotated[
        float | None,
        typer.Option(
            "--max-bubble", help="find the fewest micro-batches with a bubble at most this (e.g. 0.05)"
        ),
    ] = None,
    json_path: JsonOption = None,
    force: ForceOption = False,
) -> None:
    """Predict a step from per-stage costs and a link: step time, bubble, peak in-flight micro-batches."""
    from hone.pipeline import Link, simulate, stage_costs
    from hone.pipeline.simulate import fewest_microbatches
    from hone.report.terminal import simulation_table

    _check_json_target(json_path, force)
    virtual = stages * chunks
    forwards = _parse_costs("--forward-ms", forward_ms, virtual)
    backwards = _parse_costs("--backward-ms", backward_ms, virtual) if backward_ms else None
    costs = stage_costs(forwards, backwards, output_bytes=int(activation_mb * 1e6))
    link = Link(bandwidth_gbps, latency_ms)
    if max_bubble is not None:
        if microbatches is not None:
            raise OptionError("give --microbatches or --max-bubble, not both")
        result = fewest_microbatches(
            costs, max_bubble, schedule=schedule, mode=mode, link=link, chunks=chunks, cores=cores
        )
        console.print(
            f"{result.microbatches} micro-batches give a {result.bubble:.2%} bubble "
            f"(at most {max_bubble:.2%}) with S={stages}, {schedule}",
            highlight=False,
        )
    else:
        result = simulate(
            costs,
            schedule=schedule,
            mode=mode,
            microbatches=microbatches,
            link=link,
            chunks=chunks,
            cores=cores,
        )
    console.print(simulation_table(result))
    console.print(
        f"step {result.step_ms:.1f} ms; bubble {result.bubble:.2%} (formula for a balanced pipeline "
        f"{result.bubble_formula:.2%})",
        highlight=False,
    )
    _write_json(result, json_path, force)


def _parse_costs(flag: str, text: str, count: int) -> list[float]:
    try:
        values = [float(part) for part in text.split(",") if part.strip()]
    except ValueError as exc:
        raise OptionError(
            f"{flag} {text!r} must be numbers separated by commas, like 10 or 10,12,11"
        ) from exc
    if any(v < 0 for v in values) or len(values) not in (1, count):
        raise OptionError(f"{flag} needs one non-negative value or {count} (one per stage), got {text!r}")
    return values * count if len(values) == 1 else values


def _parse_batches(text: str, flag: str = "--batch") -> list[int]:
    try:
        batches = [int(part) for part in text.split(",") if part.strip()]
    except ValueError as exc:
        raise OptionError(f"{flag} {text!r} is not a comma-separated list of integers, like 1,8,32") from exc
    if not batches or any(b < 1 for b in batches):
        raise OptionError(f"{flag} {text!r} needs positive integers, like 1,8,32")
    return batches


def _parse_dims(texts: list[str] | None) -> dict[str, int]:
    from hone.data import parse_dims

    return parse_dims(texts)


def _load(
    model: str, input_shape: list[str] | None, dim: list[str] | None, data: str | None, *, check: bool = True
) -> Any:
    """Load MODEL with its --dim values and --data samples attached; without data, check once that
    it runs on invented inputs (or refuse in one line naming the failing node)."""
    from hone.data import attach
    from hone.sources import load

    return attach(load(model, input_shapes=input_shape), data, _parse_dims(dim), check=check)


def _check_json_target(json_path: Path | None, force: bool) -> None:
    """Refuse before any work is done, not after minutes of benchmarking."""
    if json_path is not None:
        from hone.paths import ensure_writable

        ensure_writable(json_path, force=force)


def _write_json(result: Any, json_path: Path | None, force: bool) -> None:
    if json_path is None:
        return
    from hone.results import write_json

    write_json(result, json_path, force=force)
    console.print(f"json: {json_path}")


def _progress(transient: bool = True) -> Progress:
    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=error_console,
        transient=transient,
    )


def main() -> None:
    try:
        app()
    except HoneError as exc:
        error_console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        error_console.print("interrupted")
        sys.exit(130)
    except Exception as exc:  # noqa: BLE001 - a bug in hone: still one line, the traceback only with HONE_DEBUG=1
        import os
        import traceback

        if os.environ.get("HONE_DEBUG"):
            traceback.print_exc()
        error_console.print(
            f"[red]internal error:[/red] {type(exc).__name__}: {exc} (set HONE_DEBUG=1 for the "
            "traceback and report it)",
            highlight=False,
            soft_wrap=True,
        )
        sys.exit(1)


if __name__ == "__main__":
    main()
