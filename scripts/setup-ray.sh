#!/bin/sh
# Builds .cache/ray-venv, the environment of `hone serve --ray` (`make ray` runs this).
#
# Ray Serve lives in its own virtual environment, installed from the exact lock
# scripts/ray-requirements.txt (why: see its header), with hone installed editable on top.
# Idempotent: a stamp file newer than the lock, pyproject.toml and this script means nothing to do.
set -eu

cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=.cache/ray-venv
LOCK=scripts/ray-requirements.txt
STAMP=$VENV/.installed

if [ -f "$STAMP" ] && [ "$STAMP" -nt "$LOCK" ] && [ "$STAMP" -nt pyproject.toml ] && [ "$STAMP" -nt "$0" ]; then
    echo "$VENV is up to date"
    exit 0
fi

test -x "$VENV/bin/python" || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet -r "$LOCK"
"$VENV/bin/python" -m pip install --quiet --no-deps -e .
# hone goes in --no-deps (torch, transformers, ... stay out): pip check may complain about hone only.
problems=$("$VENV/bin/python" -m pip check 2>&1 | grep -v -e '^hone ' -e '^No broken requirements' || true)
if [ -n "$problems" ]; then
    echo "$problems" >&2
    exit 1
fi
"$VENV/bin/python" -c "
import sys
import ray, ray.serve, google.protobuf, numpy
import hone.cli, hone.serve.ray_serve
assert ray.__version__ == '2.60.0', ray.__version__
assert 'torch' not in sys.modules, 'hone.serve.ray_serve must not import torch'
print('ray', ray.__version__, 'protobuf', google.protobuf.__version__, 'numpy', numpy.__version__)
"
touch "$STAMP"
echo "$VENV ready: use $VENV/bin/hone serve --ray"
