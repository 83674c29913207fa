"""Kernel tests run on the CPU: Triton's interpreter must be on before hone.kernels.triton is imported
(Triton reads TRITON_INTERPRET when the kernels are decorated)."""

import os

os.environ["TRITON_INTERPRET"] = "1"
