# The README's two set-up commands are `make demo` and `make test`; both create .venv when it is missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_OUT ?= out/demo
CHROMIUM ?= /usr/bin/chromium

.PHONY: demo test check lint format bench clean install browser

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev,molecules,gym,sweep]"
	$(BIN)/python -m pip install --quiet --no-deps "tinysoundfont>=0.3" "molsets==0.3.1"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/rltuner run --out $(DEMO_OUT)

lint: $(STAMP)
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests

check: lint
	$(BIN)/mypy

# The browser tests drive Debian's chromium through playwright; install it when missing (as root, via apt).
browser:
	@test -x $(CHROMIUM) || command -v chromium >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	  else echo "note: chromium is missing and needs root and apt-get to install: the browser tests will skip"; fi; }

test: check browser
	$(BIN)/python -m pytest -q

format: $(STAMP)
	$(BIN)/ruff format src tests
	$(BIN)/ruff check --fix src tests

bench: $(STAMP)
	$(BIN)/rltuner bench

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .mypy_cache .ruff_cache
