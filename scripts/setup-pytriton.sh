#!/usr/bin/env bash
# Makes .cache/pytriton-venv: PyTriton (Triton Inference Server in a wheel) and CPU onnxruntime,
# for the serving benchmark's Triton baseline (benchmarks/servelib/pytriton_server.py). Not CI.
#
# Why its own environment: nvidia-pytriton needs numpy<2 and brings its own tritonclient and
# protobuf, which conflict with hone's environment. Exact versions: scripts/pytriton-requirements.txt.
# Triton's Python backend stub links libpython3.X.so, so the Python used here must be a shared
# build (pyenv's and Debian's are); pytriton_server.py puts its LIBDIR on LD_LIBRARY_PATH itself.
#
# Idempotent: does nothing when the stamp is newer than the lock and this script.
# Usage: scripts/setup-pytriton.sh   (from anywhere; PYTHON=python3.x to choose the Python)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
VENV="$ROOT/.cache/pytriton-venv"
LOCK="$ROOT/scripts/pytriton-requirements.txt"
STAMP="$VENV/.installed"

if [[ -f "$STAMP" && "$STAMP" -nt "$LOCK" && "$STAMP" -nt "${BASH_SOURCE[0]}" ]]; then
  exit 0
fi

if [[ "$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_config_var("Py_ENABLE_SHARED"))')" != 1 ]]; then
  echo "setup-pytriton: $PYTHON is not a shared-library build (Triton's Python backend needs libpython3.X.so); set PYTHON to one that is" >&2
  exit 1
fi

test -x "$VENV/bin/python" || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet -r "$LOCK"
"$VENV/bin/python" - <<'PY'
import importlib.util
import numpy, onnxruntime, pytriton.triton  # noqa: F401
assert numpy.__version__.startswith("1."), numpy.__version__
assert importlib.util.find_spec("torch") is None, "torch must not be in the PyTriton environment"
PY
touch "$STAMP"
echo "setup-pytriton: ready: $VENV/bin/python (nvidia-pytriton $("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("nvidia-pytriton"))'))"
