# The two commands of the README: `make run` and `make test`. Both set everything up first:
# a virtual environment at .venv with the pinned dependencies (torch==2.13.0, CPU build) and,
# for the tests, Debian's Chromium for the browser checks.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
OUT ?= hone-out

.PHONY: setup run test browser clean

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

test: setup browser
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) $(OUT) .pytest_cache
