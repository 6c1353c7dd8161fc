# The two commands of a fresh clone: `make demo` and `make test`.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.pmc2-installed
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# System packages the tests need (Debian): OVMF firmware for launch measurements.
OVMF := /usr/share/OVMF/OVMF_CODE.fd

.PHONY: setup sysdeps test lint typecheck pytest demo clean

$(PY):
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

setup: $(STAMP)

sysdeps:
	@if [ ! -f $(OVMF) ]; then \
	  echo "installing Debian's ovmf"; \
	  $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q ovmf; \
	fi

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: setup
	$(VENV)/bin/mypy

pytest: setup sysdeps
	$(VENV)/bin/pytest -q

test: lint typecheck pytest

# make demo IMAGES=dir classifies your own photos instead of the sample photos.
demo: setup sysdeps
	$(VENV)/bin/pmc2 demo $(if $(IMAGES),--images "$(IMAGES)")

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
