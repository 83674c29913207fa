"""Pipeline parallelism: split a model into stages, run them as processes, measure the bubbles.

source.py       what is split: a torch module (zoo name, file.py:factory) or an ONNX graph
blocks.py       a torch module as a chain of single-tensor blocks, with measured costs
onnx_stages.py  an ONNX graph cut at single-tensor boundaries, with measured costs
partition.py    contiguous stages that minimize the slowest one; the loopback link
schedule.py     GPipe, 1F1B and interleaved 1F1B as per-rank action lists
worker.py       one stage process: runs its actions on torch.distributed, records a timeline
runner.py       measure, partition, spawn, check against one process, compare with the simulator
simulate.py     replay the action lists with modelled costs, to plan past one machine
"""

from __future__ import annotations

from hone.pipeline.runner import PipelineResult, StageResult, run_pipeline, write_trace
from hone.pipeline.simulate import Link, SimulationResult, StageCost, simulate
from hone.pipeline.source import PipelineSource, resolve

__all__ = [
    "Link",
    "PipelineResult",
    "PipelineSource",
    "SimulationResult",
    "StageCost",
    "StageResult",
    "resolve",
    "run_pipeline",
    "simulate",
    "write_trace",
]
