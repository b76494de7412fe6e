# Arbiter's container image (operator and router), built with podman. See docs/image.md.

.PHONY: image
image: ## Build the image with podman (installs podman, mmdebstrap, runc if missing); a no-op when its content hash exists; prints tag and size
	@hack/image.sh

# `make test` proves the image: built here (with progress) before pytest, which then finds it cached.
test: image

.PHONY: test-image
test-image: install system-deps controlplane image ## Test the image: contents, .dockerignore, the router from it, a canary decided by operator and router from it
	@$(BIN)/pytest tests/e2e/test_image.py $(PYTEST_ARGS)

.PHONY: test-e2e-image
test-e2e-image: install system-deps controlplane image ## Run every e2e story with the operator from the image (ARBITER_TEST_OPERATOR=image)
	@ARBITER_TEST_OPERATOR=image $(BIN)/pytest tests/e2e $(PYTEST_ARGS)

.PHONY: image-clean
image-clean: ## Remove every localhost/arbiter image, the local base image and podman's build cache
	@podman images --format '{{.Repository}}:{{.Tag}}' | grep -E '^localhost/arbiter(-base)?:' | xargs -r podman rmi --force
	@podman image prune --force >/dev/null
