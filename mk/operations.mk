# Running the operator: leader election, conditional status writes, Prometheus credentials. See docs/operations.md.

.PHONY: test-operations
test-operations: install system-deps controlplane ## Test leader election (handover times printed), stale-writer conflicts and Prometheus TLS/auth on real parts (~3.5 min)
	@$(BIN)/pytest -s tests/unit/k8s/test_leader_lease.py tests/unit/metrics/test_prometheus_connection.py tests/unit/cli/test_run_options.py \
		tests/integration/test_leader_election.py tests/integration/test_status_conflicts.py \
		tests/integration/test_prometheus_auth.py tests/integration/test_prometheus_source_validation.py \
		tests/integration/test_secret_access.py $(PYTEST_ARGS)
