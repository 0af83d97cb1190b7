# dalle: the two commands a new user needs are `make demo` and `make test`; both set everything up first.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
REF_STAMP := $(VENV)/.installed-ref
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: setup setup-ref demo test test-all bazel-test build-files bench clean

$(STAMP): requirements.txt pyproject.toml
	@command -v bazel >/dev/null 2>&1 || { echo "installing Debian's bazel-bootstrap (offline Bazel 4.2.3)"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bazel-bootstrap) \
	  || echo "warning: could not install bazel-bootstrap (needs root); 'make bazel-test' will not work"; }
	@command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1 || { \
	  echo "installing Debian's chromium + chromium-driver (for the web demo's browser test)"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver) \
	  || echo "warning: could not install chromium (needs root); the browser test will be skipped"; }
	@command -v npm >/dev/null 2>&1 || { echo "installing Debian's npm (fetches the emoji image packages)"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq npm) \
	  || echo "warning: could not install npm (needs root); the emoji data set cannot be fetched"; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $(STAMP)

setup: $(STAMP)

# Reference implementations some tests compare against (torch, taming-transformers, OpenAI's dall-e); see
# requirements-ref.txt.
$(REF_STAMP): $(STAMP) requirements-ref.txt
	$(PY) -m pip install -q -r requirements-ref.txt
	$(PY) -m pip install -q --no-deps taming-transformers-rom1504==0.0.6
	$(PY) -m pip install -q --no-deps dall-e==0.1
	touch $(REF_STAMP)

setup-ref: $(REF_STAMP)

demo: setup
	$(VENV)/bin/dalle demo --config configs/emoji_tiny.py

test: setup setup-ref
	$(PY) -m pytest -q tests

test-all: setup setup-ref
	$(PY) -m pytest -q --runslow tests

bazel-test: setup
	$(PY) tools/gen_build.py --check
	bazel test //...

build-files: setup
	$(PY) tools/gen_build.py

bench: setup setup-ref
	$(PY) -m benchmarks.run_all

clean:
	rm -rf $(VENV) outputs bazel-*
