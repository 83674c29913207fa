"""Pipeline parallelism: split a model into stages, run them as processes, measure the bubbles.

types.py        the fixed choices (schedule, mode, backend) and the result types, importing nothing heavy
source.py       what is split: a torch module (zoo name, file.py:factory) or an ONNX graph
blocks.py       a torch module as a chain of single-tensor blocks, with measured costs
onnx_stages.py  an ONNX graph cut at single-tensor boundaries, with measured costs
partition.py    contiguous stages that minimize the slowest one; the loopback link
schedule.py     GPipe, 1F1B and interleaved 1F1B as per-rank action lists
worker.py       one stage process: runs its actions on torch.distributed, records a timeline
options.py      a run's options: defaults, and the checks before any process starts
plan.py         measure, partition, write weights and data, describe each stage process
launch.py       spawn the stage processes here, or join torchrun's; one line when one fails
reference.py    the same micro-batches in one process: the answers to match, the time to beat
assemble.py     the PipelineResult from the stages' reports and the simulator
run.py          run_pipeline: options, plan, launch, reference, assemble
trace.py        the median step as a Chrome trace
simulate.py     replay the action lists with modelled costs, to plan past one machine
"""

from __future__ import annotations

from hone.pipeline.run import run_pipeline
from hone.pipeline.simulate import StageCost, simulate, stage_costs
from hone.pipeline.source import PipelineSource, resolve
from hone.pipeline.trace import write_trace
from hone.pipeline.types import Link, PipelineResult, PipelineStage, SimulationResult, StageDone

__all__ = [
    "Link",
    "PipelineResult",
    "PipelineSource",
    "PipelineStage",
    "SimulationResult",
    "StageCost",
    "StageDone",
    "resolve",
    "run_pipeline",
    "simulate",
    "stage_costs",
    "write_trace",
]
