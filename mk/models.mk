# Real models behind a real model server (MLServer + scikit-learn). See docs/models.md.

.PHONY: models
models: ## Create MLServer's own virtualenv and train the fraud models (cached in ~/.cache/arbiter)
	@hack/models/setup.sh >/dev/null

.PHONY: test-models
test-models: install system-deps controlplane models ## The real-model stories: MLServer pairs behind the router, delayed labels, shadow rules, the offline loop, the demo scenarios
	@$(BIN)/pytest tests/e2e/test_real_models_harness.py tests/e2e/test_real_models.py tests/e2e/test_real_models_offline.py $(PYTEST_ARGS)
