# Two set-up commands: `make demo` and `make test`. Both create .venv on a fresh machine.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# kserve's client (a test-only tool: the service's Open Inference Protocol test) pins protobuf, pandas and psutil
# below what the rest of the stack needs, so it is installed without its dependency list: itself and the
# packages its client imports, at the versions constraints.txt pins
KSERVE_NODEPS := kserve cloudevents deprecation grpcio grpc-interceptor orjson timing-asgi watchfiles kubernetes \
	oauthlib requests-oauthlib durationpy websocket-client six

.PHONY: demo test check venv clean bench constraints pg-server chromium tcmalloc

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Our own environment is reproducible: pyproject.toml declares ranges (what effnet works with, beside a user's
# own torch); constraints.txt pins the exact versions we test. Reinstall when either changes.
$(STAMP): pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[dev]"
	$(BIN)/python -m pip install -q -c constraints.txt --no-deps $(KSERVE_NODEPS)
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/effnet demo

# Two pytest workers (pytest-xdist), a test file each at a time (module fixtures are built once), every process on
# one OpenMP thread (tests/conftest.py): the suite's commands and servers are mostly single-threaded, so two files
# side by side use both cores where one pytest process left one idle (1,014 s in one process, idle machine)
test: $(STAMP) pg-server chromium tcmalloc
	@start=$$(date +%s); $(BIN)/python -m pytest -q -n 2 --dist loadfile --durations=30 tests; status=$$?; \
	  echo "make test: $$(( $$(date +%s) - start )) s"; exit $$status

# The inner loop: the quick tier, every test that tests/conftest.py does not list in SLOW (none needs PostgreSQL,
# chromium or tcmalloc); its slowest tests and its whole time, start-up included, at the end.
check: $(STAMP)
	@start=$$(date +%s); $(BIN)/python -m pytest -q -n 2 --dist loadfile -m quick --durations=10 tests; status=$$?; \
	  echo "make check: $$(( $$(date +%s) - start )) s"; exit $$status

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

# `effnet train` runs under tcmalloc when installed (effnet/train/allocator.py: faster, leaner steps); install
# Debian's when missing (root only). Without it training uses the system allocator and its test is skipped.
tcmalloc:
	@if ! ldconfig -p 2>/dev/null | grep -q libtcmalloc_minimal; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian's libtcmalloc-minimal4 for effnet train"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libtcmalloc-minimal4 >/dev/null 2>&1) \
	      || echo "note: could not install libtcmalloc-minimal4; training uses the system allocator"; \
	  else echo "note: no libtcmalloc-minimal4 and not root; training uses the system allocator"; fi; \
	fi

# Re-pin constraints.txt to what .venv has now (after a deliberate upgrade; then run make test).
constraints: $(STAMP)
	$(BIN)/python -m pip freeze --exclude-editable | grep -v '^effnet==' > constraints.txt

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_infer.py

clean:
	rm -rf $(VENV) build *.egg-info
