# The two commands of the README: `make run` and `make test`. Both set everything up first:
# a virtual environment at .venv with the pinned dependencies (torch==2.13.0, CPU build) and,
# for the tests, Debian's Chromium for the browser checks and the ONNX backend node test data.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
OUT ?= hone-out
# ONNX backend node test cases (model + inputs + expected outputs), from the onnx 1.22.0 wheel.
NODE_DATA := .cache/onnx-node-data
NODE_DATA_STAMP := $(NODE_DATA)/.fetched

.PHONY: setup run test browser node-data clean

setup: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch first and alone, pinned: anything else would pull a multi-GB CUDA build.
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	$(BIN)/python -c "import torch; assert torch.__version__.startswith('2.13.0'), torch.__version__"
	touch $(STAMP)

# Runs hone's main job on the built-in default model (resnet18); the report lands in $(OUT)/.
run: setup
	$(BIN)/hone run --out $(OUT) --force

browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing Debian's chromium (needs root)"; \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; }

# pip downloads the wheel (~19 MB) and only its onnx/backend/test/data/node/ folder is kept.
node-data: $(NODE_DATA_STAMP)

$(NODE_DATA_STAMP): $(STAMP) tests/tools/fetch_onnx_node_data.py
	$(BIN)/python tests/tools/fetch_onnx_node_data.py --dest $(NODE_DATA)

test: setup browser node-data
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) $(OUT) .pytest_cache $(NODE_DATA)
