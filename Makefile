# Everything installs itself: a fresh machine needs only python3 (with venv) and make.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
RUN    := run/demo

.PHONY: venv browser postgresql lint test demo bench clean

$(STAMP): pyproject.toml simfarm/pyproject.toml
	@# The farm puts a real HAProxy in front of the sites when the inventory's balancer is HAProxy.
	command -v haproxy >/dev/null || test -x /usr/sbin/haproxy || \
		(apt-get update -q && apt-get install -y -q haproxy)
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]' -e './simfarm[test]'
	touch $(STAMP)
	@echo "installed: run '. $(VENV)/bin/activate' to put the orchestrator command on your PATH"

venv: $(STAMP)

# The farm is checked from its own folder: both distributions have a `tests` package.
lint: venv
	$(VENV)/bin/ruff check orchestrator tests bench simfarm
	$(VENV)/bin/ruff format --check orchestrator tests bench simfarm
	$(VENV)/bin/mypy orchestrator tests bench
	cd simfarm && $(abspath $(VENV))/bin/mypy simfarm tests

# Headless Chromium renders the HTML report in tests/e2e/test_html_browser.py (Debian's package).
browser:
	@command -v chromium >/dev/null || apt-get install -y chromium \
		|| (apt-get update && apt-get install -y chromium)

# The journal's PostgreSQL store is tested against a private server started from Debian's binaries
# (tests/pgserver.py); CI runs as root, so a missing package is installed here.
postgresql:
	@ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || apt-get install -y postgresql \
		|| (apt-get update && apt-get install -y postgresql)

# The root suite in two processes (pytest-xdist): its end-to-end tests mostly wait on farms and
# child processes. Each worker's farms take loopback blocks of their own (tests/e2e/harness.py);
# tests on fixed addresses share an xdist group, so they never run at once. PYTEST_WORKERS=0: one process.
PYTEST_WORKERS ?= 2

test: lint browser postgresql
	$(VENV)/bin/pytest -q -n $(PYTEST_WORKERS) --dist loadgroup
	cd simfarm && $(abspath $(VENV))/bin/pytest -q

# Start the simulated farm from inventories/demo.yaml, roll a restart over it, print the summary,
# stop the farm (by its PID) whatever the outcome, and exit with the run's exit code.
demo: venv
	@mkdir -p $(RUN)
	@rm -rf $(RUN)/farm
	@$(PY) -m simfarm --inventory inventories/demo.yaml --describe $(RUN)/farm.json --workdir $(RUN)/farm \
		> $(RUN)/sim.out 2> $(RUN)/sim.log & echo $$! > $(RUN)/sim.pid; \
	for i in $$(seq 1 300); do grep -qx ready $(RUN)/sim.out 2>/dev/null && break; \
		kill -0 $$(cat $(RUN)/sim.pid) 2>/dev/null || break; sleep 0.1; done; \
	if ! grep -qx ready $(RUN)/sim.out; then kill $$(cat $(RUN)/sim.pid) 2>/dev/null; \
		echo "make demo: the simulated farm did not start: $$(sed 's/^error: //' $(RUN)/sim.log | paste -sd ' ')" >&2; \
		exit 1; fi; \
	$(PY) -m orchestrator run inventories/demo.yaml --report $(RUN)/report.json --events $(RUN)/run-events.jsonl; \
	rc=$$?; kill $$(cat $(RUN)/sim.pid); wait; \
	echo "report: $(RUN)/report.json  farm event log: $$($(PY) -c 'import json;print(json.load(open("$(RUN)/farm.json"))["events"])')"; \
	exit $$rc

bench: venv
	$(PY) bench/fanout.py
	$(PY) bench/rollout.py
	$(PY) bench/journal.py
	$(PY) bench/lb.py
	$(PY) bench/live_status.py
	$(PY) bench/inputs.py
	$(PY) bench/floor.py

clean:
	rm -rf $(VENV) run .mypy_cache .ruff_cache .pytest_cache
