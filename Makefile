# Two set-up commands: `make demo` and `make test`. Both create .venv on a fresh machine.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test venv clean bench pg-server chromium

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Reinstall when pyproject.toml changes.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/effnet demo

test: $(STAMP) pg-server chromium
	$(BIN)/python -m pytest -q tests

# The shared-study test starts a private PostgreSQL cluster; install Debian's server when missing (root only).
pg-server:
	@if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian's postgresql for the shared-study test"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null) \
	      || echo "note: could not install postgresql; its test will be skipped"; \
	  else echo "note: no PostgreSQL server and not root; its test will be skipped"; fi; \
	fi

# The serve page test drives Debian's chromium with Playwright (its own browser download is not reachable);
# install it when missing (root only).
chromium:
	@if ! command -v chromium >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian's chromium for the serve page test"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null 2>&1) \
	      || echo "note: could not install chromium; the serve page test will be skipped"; \
	  else echo "note: no chromium and not root; the serve page test will be skipped"; fi; \
	fi

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_infer.py

clean:
	rm -rf $(VENV) build *.egg-info
