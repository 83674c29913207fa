"""Hand-written kernels: ``hone.kernels.triton`` (GPU, Triton) and ``hone.kernels.wgsl`` (WebGPU).

Each kernel has a one-call Python API that checks its inputs and a reference it is tested against.
"""
