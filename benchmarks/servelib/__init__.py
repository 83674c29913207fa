"""Pieces of the serving benchmark and tests that drive inference servers from the outside, with
the tools their users already trust: ``perf_analyzer`` (Triton's load generator, from
``.cache/perf-venv``), ``pytriton_server`` (the Triton baseline, PyTriton serving the same ONNX
model, run in ``.cache/pytriton-venv``) and ``servers`` (start, wait for ready, stop). They live
outside ``src/hone`` because hone must not depend on them.
"""
