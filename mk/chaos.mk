# The fault-injection suite (tests/chaos). See docs/chaos.md. `make test` runs a bounded slice of it
# (4 operator-kill runs, one handover per kind); this target runs the full counts.

CHAOS_KILL_RUNS ?= 50
CHAOS_HANDOVER_RUNS ?= 2
CHAOS_LOG ?= .chaos/runs.jsonl

.PHONY: chaos
chaos: install system-deps controlplane ## Fault injection: operator SIGKILL (CHAOS_KILL_RUNS=50 runs), leader handover and the tests/chaos faults vs undisturbed runs; summary JSON last, fails on any difference
	@rm -f $(CHAOS_LOG)
	@echo ">> chaos: $(CHAOS_KILL_RUNS) operator-kill runs, $(CHAOS_HANDOVER_RUNS) handovers per kind; ledger $(CHAOS_LOG)"
	@status=0; \
	  ARBITER_CHAOS_LOG=$(abspath $(CHAOS_LOG)) CHAOS_KILL_RUNS=$(CHAOS_KILL_RUNS) \
	  CHAOS_HANDOVER_RUNS=$(CHAOS_HANDOVER_RUNS) $(BIN)/pytest tests/chaos -m chaos $(PYTEST_ARGS) || status=$$?; \
	  summary=$$($(PY) tests/chaos_ledger.py $(CHAOS_LOG)); \
	  $(PY) -c 'import json, sys; s = json.loads(sys.argv[1]); sys.exit(0 if s["runs"] and not (s["outcomes_differed"] or s["steps_lost"] or s["steps_doubled"]) else 1)' "$$summary" || status=1; \
	  echo "$$summary"; \
	  exit $$status
