# The two commands of the README: `make demo` (the main job on the embedded default) and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
MEDIA ?= $(HOME)/.cache/avshards-media
export AVSHARDS_MEDIA := $(MEDIA)

.PHONY: setup demo test test-fast bench clean

setup:
	@bash tools/setup.sh

media: setup
	@PYTHON=$(PY) bash tools/fetch-public-media.sh $(MEDIA) >/dev/null

demo: setup
	$(VENV)/bin/crisscross demo --out report

test: setup
	$(PY) -m pytest -q tests

test-fast: setup
	$(PY) -m pytest -q -m "not slow" tests

bench: setup
	$(PY) tools/bench.py --out docs/benchmarks.json

clean:
	rm -rf $(VENV) report out
