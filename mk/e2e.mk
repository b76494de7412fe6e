.PHONY: test-e2e
test-e2e: install system-deps controlplane ## Run the e2e rollout stories (operator + API server + Prometheus + router + model servers)
	@$(BIN)/pytest tests/e2e $(PYTEST_ARGS)

.PHONY: test-e2e-harness
test-e2e-harness: install system-deps controlplane ## Check the e2e harness alone (model servers, traffic, router env, Prometheus)
	@$(BIN)/pytest tests/e2e/test_harness_selfcheck.py $(PYTEST_ARGS)

.PHONY: bench-breach
bench-breach: install system-deps controlplane ## Measure latency breach -> rollback on real parts; writes .bench/e2e/breach_to_rollback.json
	@$(BIN)/pytest tests/e2e/test_rollout_canary.py -k latency_breach -s $(PYTEST_ARGS)
	@cat .bench/e2e/breach_to_rollback.json
