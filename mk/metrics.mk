# Metrics from Prometheus (operator/arbiter/metrics). See docs/metrics.md.

.PHONY: test-metrics
test-metrics: install system-deps ## Test the metrics provider: HTTP-boundary unit tests, then against a real Prometheus
	@$(BIN)/pytest tests/unit/metrics tests/integration/test_metrics_prometheus.py $(PYTEST_ARGS)
