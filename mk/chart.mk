# The Helm chart (charts/arbiter). See charts/arbiter/README.md.

.PHONY: chart-readme
chart-readme: install ## Regenerate charts/arbiter/README.md from README.md.in and the `# --` comments of values.yaml
	@$(PY) hack/chart_readme.py

.PHONY: chart-readme-check
chart-readme-check: install ## Fail if charts/arbiter/README.md is stale or a chart value is undocumented
	@$(PY) hack/chart_readme.py --check

.PHONY: test-chart
test-chart: install system-deps controlplane ## Test the chart with real helm on the local control plane (lint, template, schema, RBAC, install/upgrade/uninstall) and its ServiceAccounts at run time
	@$(BIN)/pytest tests/unit/test_chart_readme.py tests/unit/cli/test_run_logging.py tests/integration/test_helm_chart.py \
	  tests/e2e/test_operator_identity.py $(PYTEST_ARGS)
