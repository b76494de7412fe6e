# Arbiter. `make help` lists every target. Each target installs what it needs.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
BIN := $(VENV)/bin
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export PYTHONPATH := $(CURDIR)/hack$(if $(PYTHONPATH),:$(PYTHONPATH))
PYTEST_ARGS ?=

.PHONY: help
help: ## Show every target with its help text
	@grep -hE '^[a-zA-Z0-9_.-]+:.*## ' $(MAKEFILE_LIST) | sort -u \
	  | awk 'BEGIN {FS = ":.*## "}; {printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2}'

# constraints.txt pins every package (`make lock` regenerates it): CI and every clone get the
# versions the tests last passed with, not whatever was newest that day.
$(VENV)/.installed: pyproject.toml constraints.txt
	@echo ">> creating $(VENV) and installing arbiter[dev] pinned by constraints.txt (first run: a few minutes)"
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PIP) install --disable-pip-version-check -q --progress-bar on -U pip
	@$(PIP) install --disable-pip-version-check --progress-bar on -c constraints.txt -e '.[dev]'
	@touch $@

.PHONY: install
install: $(VENV)/.installed ## Create .venv and install arbiter with its dev tools, pinned by constraints.txt (idempotent)

.PHONY: system-deps
system-deps: ## Install the Debian packages the tests use (prometheus, nginx, wrk, alertmanager), if missing
	@hack/system-deps.sh

.PHONY: controlplane
controlplane: ## Build the local control plane binaries from Go modules (cached in ~/.cache/arbiter)
	@hack/build-control-plane.sh >/dev/null

.PHONY: lint
lint: install ## ruff, mypy, import-linter, the CRD and chart README staleness checks
	@echo ">> ruff"; $(BIN)/ruff check operator tests bench hack
	@echo ">> ruff format --check"; $(BIN)/ruff format --check operator tests bench hack
	@echo ">> mypy"; $(BIN)/mypy
	@echo ">> import-linter"; $(BIN)/lint-imports
	@$(MAKE) --no-print-directory crds-check
	@$(MAKE) --no-print-directory chart-readme-check

.PHONY: fmt
fmt: install ## Format the code and apply ruff's safe fixes
	@$(BIN)/ruff format operator tests bench hack
	@$(BIN)/ruff check --fix operator tests bench hack

.PHONY: crds
crds: install ## Generate the CRD (crds/ and charts/arbiter/crds/) from operator/arbiter/api
	@$(PY) -m arbiter.api.crd --out crds/modelexperiment.yaml --out charts/arbiter/crds/modelexperiment.yaml
	@$(PY) -m arbiter.api.template_crd --out crds/metrictemplates.yaml --out charts/arbiter/crds/metrictemplates.yaml

.PHONY: crds-check
crds-check: install ## Fail if the committed CRD differs from what `make crds` generates
	@$(PY) -m arbiter.api.crd --check crds/modelexperiment.yaml --check charts/arbiter/crds/modelexperiment.yaml
	@$(PY) -m arbiter.api.template_crd --check crds/metrictemplates.yaml --check charts/arbiter/crds/metrictemplates.yaml

.PHONY: test
test: install system-deps controlplane lint ## Run every test: unit, integration (real API server, real Prometheus) and e2e
	@echo ">> pytest (the control plane starts once for the session)"
	@$(BIN)/pytest $(PYTEST_ARGS)

.PHONY: test-unit
test-unit: install ## Run the unit tests only (fast, no cluster)
	@$(BIN)/pytest tests/unit $(PYTEST_ARGS)

.PHONY: cluster-up
cluster-up: install system-deps controlplane ## Start etcd, kube-apiserver, controller-manager, scheduler and kwok; writes .cluster/kubeconfig
	@$(PY) -m localcluster up --dir .cluster

.PHONY: cluster-down
cluster-down: ## Stop every process `make cluster-up` started
	@$(PY) -m localcluster down --dir .cluster 2>/dev/null || $(PYTHON) hack/localcluster/__main__.py down --dir .cluster

SCENARIO ?= good
.PHONY: demo
demo: install system-deps controlplane models ## The demo on real models (MLServer): SCENARIO=good|regression|latency|aa|shadow (default good); stops everything at the end
	@$(PY) hack/demo.py --dir .cluster --scenario $(SCENARIO)

.PHONY: clean
clean: cluster-down ## Stop the cluster and remove build and test caches (keeps the Go binary cache)
	@rm -rf .cluster .pytest_cache .mypy_cache .ruff_cache .hypothesis .lock-venv

-include mk/*.mk
