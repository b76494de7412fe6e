# Local control plane and Prometheus helpers (hack/localcluster). See docs/local-cluster.md.

.PHONY: cluster-status
cluster-status: install ## Say whether the .cluster control plane runs and answers /readyz
	@$(PY) -m localcluster status --dir .cluster

.PHONY: test-localcluster
test-localcluster: install system-deps controlplane ## Test the local control plane, Prometheus runner and fixtures
	@$(BIN)/pytest tests/unit/test_localcluster_certs.py tests/unit/test_localcluster_config.py \
	  tests/integration/test_local_cluster.py tests/integration/test_prometheus.py $(PYTEST_ARGS)
