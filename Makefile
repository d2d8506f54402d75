# One command runs the console (make run), one passes the tests (make test); each sets up what it needs.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test test-unit test-integration lint bench images engine clean-docker venv mutmut swarm-lab swarm-lab-down

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

# Installs the Docker engine, compose v2, debootstrap, tmux and chromium where missing (as root) and starts dockerd.
engine: $(STAMP)
	scripts/engine.sh $(PY)

images: engine
	$(BIN)/bottle-tui images build

# A real swarm on this machine (a manager and two workers, each a dockerd in a network namespace of
# its own), the Docker contexts bottle-tui-lab and bottle-tui-lab-<node>, and the images on every
# node; idempotent. swarm-lab-down removes all of it.
swarm-lab: images
	scripts/swarm-lab.sh up $(PY)

swarm-lab-down:
	scripts/swarm-lab.sh down

# Sets up the engine and images where it can (a no-op when up to date); the console opens either
# way and reports a missing engine itself.
run: $(STAMP)
	-@scripts/engine.sh $(PY) && $(BIN)/bottle-tui images build
	$(BIN)/bottle-tui console

# ruff (lint and format check), mypy --strict on bottle_tui/ and the contract package, and the
# import contracts (pyproject.toml, [tool.importlinter]); every tool runs, and any failure fails it.
lint: $(STAMP)
	@status=0; \
	$(BIN)/ruff check . || status=1; \
	$(BIN)/ruff format --check . || status=1; \
	$(BIN)/mypy || status=1; \
	$(BIN)/lint-imports --no-cache || status=1; \
	exit $$status

# Unit tests (no engine needed) in parallel across the cores; xdist-safe: tmp paths, their own
# tmux sockets, no fixed ports.
UNIT = $(PY) -m pytest tests/host tests/sidecars -q -ra -n auto
test-unit: $(STAMP)
	$(UNIT)

# Integration tests in INTEGRATION_WORKERS processes (pytest-xdist; 0: all in one, serially).
# --dist loadfile keeps each module in one worker, so a module's bottle is started once; the
# slowest modules go first (tests/integration/conftest.py). The console's tmux tests drive its
# agents pane by row, where other workers' bottles come and go: they run after, by themselves.
INTEGRATION_WORKERS ?= 2
INTEGRATION_ALONE = tests/integration/test_console_tmux_live.py tests/integration/test_console_flows.py
PYTEST_INTEGRATION = $(PY) -m pytest -q -ra --durations=12
ifeq ($(INTEGRATION_WORKERS),0)
INTEGRATION = $(PYTEST_INTEGRATION) tests/integration
else
INTEGRATION = ( $(PYTEST_INTEGRATION) tests/integration $(addprefix --ignore=,$(INTEGRATION_ALONE)) \
	-n $(INTEGRATION_WORKERS) --dist loadfile; s=$$?; $(PYTEST_INTEGRATION) $(INTEGRATION_ALONE) || s=1; exit $$s )
endif
test-integration: images
	$(INTEGRATION)

# lint (the CPU) runs while the engine installs (the network and dpkg), each one's output kept
# together; the unit tests run while the images build (a no-op when they are up to date); the
# integration tests need the images, and run even when a unit test failed (one run says all it can).
test: $(STAMP)
	@$(MAKE) --no-print-directory -j2 -O lint engine
	@$(BIN)/bottle-tui images build > $(VENV)/images-build.log 2>&1 & build=$$!; \
	$(UNIT); unit=$$?; \
	if ! wait $$build; then tail -n 20 $(VENV)/images-build.log; exit 1; fi; \
	$(INTEGRATION); integration=$$?; \
	[ $$unit -eq 0 ] || { echo "make test: the unit tests failed (see above)"; exit $$unit; }; \
	exit $$integration

bench: images
	$(PY) bench/bench_images.py
	$(PY) bench/bench_bringup.py
	$(PY) bench/bench_pool.py
	$(PY) bench/bench_workspace_stop.py
	$(PY) bench/bench_snapshot.py
	$(PY) bench/bench_ls.py
	$(PY) bench/bench_egress.py
	$(PY) bench/bench_metering.py
	$(PY) bench/bench_smolvm.py
	$(PY) bench/bench_supervise.py
	$(PY) bench/bench_dlp.py
	$(PY) bench/bench_git_gate.py
	$(PY) bench/bench_workspace.py
	$(PY) bench/bench_console.py
	$(PY) bench/bench_console.py
	$(PY) bench/bench_tmux.py
	$(PY) bench/bench_streams.py
	$(PY) bench/bench_notify.py
	$(PY) bench/bench_swarm.py

# Mutation testing of the DLP package with mutmut (not part of `make test`: about 4,000 mutants,
# most of an hour on 2 cores). Resumes where it stopped; `make mutmut ARGS=results` lists survivors.
mutmut: $(STAMP)
	scripts/mutmut-dlp.sh $(PY) $(ARGS)

# Removes what the tests leave: bottles whose home is a pytest temporary folder, their work
# volumes (cleanup archives them into that home first) and snapshot images (labelled with the home
# that took them: cleanup --homes-under removes those), the tests' fake-internet containers,
# networks and volumes, and the tests' tmux servers. Your own bottles stay (`bottle-tui cleanup` handles those).
PYTEST_TMP = $(shell $(PYTHON) -c 'import getpass, os, tempfile; print(os.path.join(tempfile.gettempdir(), "pytest-of-" + getpass.getuser()))')
clean-docker: $(STAMP)
	$(BIN)/bottle-tui cleanup --yes --homes-under "$(PYTEST_TMP)"
	-docker rm -f $$(docker ps -aq --filter label=dev.bottle-tui.test=true) 2>/dev/null
	-docker network rm $$(docker network ls -q --filter label=dev.bottle-tui.test=true) 2>/dev/null
	-docker volume rm $$(docker volume ls -q --filter label=dev.bottle-tui.test=true) 2>/dev/null
	-for s in $${TMUX_TMPDIR:-/tmp}/tmux-$$(id -u)/bottle-tui-test-* $${TMUX_TMPDIR:-/tmp}/tmux-$$(id -u)/libtmux_test*; do \
		[ -S "$$s" ] && tmux -S "$$s" kill-server 2>/dev/null; rm -f "$$s"; done; true
