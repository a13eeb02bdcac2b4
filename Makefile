# Two commands do everything on a fresh machine:
#   make serve   run the router on the example zone (no probing: it names public hosts)
#   make test    run the test suite
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin

.PHONY: serve test lint bench-dns bench-http clean

$(BIN)/mirror-router: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

serve: $(BIN)/mirror-router
	$(BIN)/mirror-router serve --zones zones --no-probe --trusted-proxy 127.0.0.1/32

test: $(BIN)/mirror-router
	$(BIN)/ruff check router tests bench bench/dns bench/heads bench/http tools
	$(BIN)/mypy
	$(BIN)/pytest -q

lint: $(BIN)/mirror-router
	$(BIN)/ruff check router tests bench bench/dns bench/heads bench/http tools
	$(BIN)/mypy

bench-dns: $(BIN)/mirror-router
	$(BIN)/python bench/dns

bench-http: $(BIN)/mirror-router
	$(BIN)/python bench/http

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
