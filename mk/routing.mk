# Routing providers (operator/arbiter/routing). See docs/routing.md.

.PHONY: thirdparty-crds
thirdparty-crds: ## Fetch the Gateway API, Istio and prometheus-operator (ServiceMonitor, PodMonitor) CRDs from their Go modules (pinned in hack/versions.env); prints their paths
	@hack/thirdparty-crds.sh

.PHONY: test-routing
test-routing: install system-deps controlplane ## Test the routing providers: pure logic, then against the real API server with the real CRDs
	@$(BIN)/pytest tests/unit/routing tests/unit/api/test_weights.py tests/integration/test_routing_*.py $(PYTEST_ARGS)
