#!/usr/bin/env bash
# Makes .cache/perf-venv with Triton's perf_analyzer and a wrapper, bin/hone-perf-analyzer, that
# finds its shared libraries. perf_analyzer is the reference load generator for KServe v2 servers;
# hone's tests and benchmarks drive `hone serve` (and PyTriton's Triton) with it.
#
# Why its own environment: tritonclient pins numpy<2 and protobuf<7 (hone's environment has newer).
# Why tritonclient 2.51.0: the last wheel whose perf_analyzer runs on Debian 12's glibc 2.36.
# Its two missing libraries: libb64.so.0d (Debian's libb64-0d, 38 kB, installed when missing;
# needs root) and libcudart.so.12 (PyPI's nvidia-cuda-runtime-cu12, a 0.9 MB wheel; no GPU needed).
#
# Idempotent: does nothing when the stamp is newer than the lock and this script.
# Usage: scripts/setup-perf-analyzer.sh   (from anywhere; PYTHON=python3.x to choose the Python)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
VENV="$ROOT/.cache/perf-venv"
LOCK="$ROOT/scripts/perf-analyzer-requirements.txt"
STAMP="$VENV/.installed"
WRAPPER="$VENV/bin/hone-perf-analyzer"

if [[ -f "$STAMP" && "$STAMP" -nt "$LOCK" && "$STAMP" -nt "${BASH_SOURCE[0]}" && -x "$WRAPPER" ]]; then
  exit 0
fi

# (ldconfig's list is read whole first: `ldconfig -p | grep -q` can fail under pipefail on SIGPIPE.)
LIBS="$( (/sbin/ldconfig -p || ldconfig -p) 2>/dev/null || true)"
if [[ "$LIBS" != *"libb64.so.0d "* ]]; then
  if [[ "$(id -u)" != 0 ]]; then
    echo "setup-perf-analyzer: libb64.so.0d is missing; run as root or: sudo apt-get install libb64-0d" >&2
    exit 1
  fi
  echo "setup-perf-analyzer: installing Debian's libb64-0d (perf_analyzer links against it)"
  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q libb64-0d
fi

test -x "$VENV/bin/python" || "$PYTHON" -m venv "$VENV"
# --no-deps: only the perf_analyzer binary is used, not tritonclient's Python modules.
"$VENV/bin/python" -m pip install --quiet --no-deps -r "$LOCK"

CUDART_DIR="$("$VENV/bin/python" -c 'import nvidia.cuda_runtime, os; print(os.path.join(nvidia.cuda_runtime.__path__[0], "lib"))')"
test -f "$CUDART_DIR/libcudart.so.12" || {
  echo "setup-perf-analyzer: libcudart.so.12 not found in $CUDART_DIR; delete $VENV and rerun" >&2
  exit 1
}
test -x "$VENV/bin/perf_analyzer" || {
  echo "setup-perf-analyzer: $VENV/bin/perf_analyzer missing; delete $VENV and rerun" >&2
  exit 1
}

cat >"$WRAPPER" <<WRAP
#!/usr/bin/env bash
# Triton's perf_analyzer with libcudart.so.12 from this environment (written by setup-perf-analyzer.sh).
export LD_LIBRARY_PATH="$CUDART_DIR\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
exec "$VENV/bin/perf_analyzer" "\$@"
WRAP
chmod +x "$WRAPPER"

# --version exits 0 once every library loads (--help exits 99 by design).
if ! VERSION="$("$WRAPPER" --version 2>&1)"; then
  echo "$VERSION" >&2
  echo "setup-perf-analyzer: perf_analyzer does not start; see: ldd $VENV/bin/perf_analyzer" >&2
  exit 1
fi
touch "$STAMP"
echo "setup-perf-analyzer: ready: $WRAPPER ($(echo "$VERSION" | tail -1))"
