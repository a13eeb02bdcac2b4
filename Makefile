# Two commands do everything on a fresh machine:
#   make serve   run the router on the example zone (no probing: it names public hosts)
#   make test    run the test suite
# and one more shows it live:
#   make demo    five loopback mirrors and a router that probes them (tools/loopback_demo.py)
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
# the bench scripts without a .py suffix, which ruff does not find by itself
SCRIPTS = bench/dns bench/heads bench/http bench/abuse bench/rrl bench/mutate bench/fleet

.PHONY: serve test demo lint bench-dns bench-http dist clean

$(BIN)/mirror-router: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

serve: $(BIN)/mirror-router
	$(BIN)/mirror-router serve --zones zones --no-probe --trusted-proxy 127.0.0.1/32

demo: $(BIN)/mirror-router
	$(BIN)/python tools/loopback_demo.py

test: $(BIN)/mirror-router
	$(BIN)/ruff check router tests bench $(SCRIPTS) tools
	$(BIN)/mypy
	$(BIN)/pytest -q -n 2 --dist loadfile

lint: $(BIN)/mirror-router
	$(BIN)/ruff check router tests bench $(SCRIPTS) tools
	$(BIN)/mypy

bench-dns: $(BIN)/mirror-router
	$(BIN)/python bench/dns

bench-http: $(BIN)/mirror-router
	$(BIN)/python bench/http

dist: $(BIN)/mirror-router
	$(BIN)/pip install --quiet build
	$(BIN)/python -m build --outdir dist .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache .hypothesis *.egg-info build dist
