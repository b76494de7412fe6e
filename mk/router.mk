# Arbiter's model router: benchmark against nginx (see docs/router.md).

.PHONY: bench-router
bench-router: install system-deps ## Benchmark `arbiter router` vs nginx and a direct baseline with wrk (loopback, ~3 min; JSON last line)
	@$(PY) bench/router/run.py $(BENCH_ROUTER_ARGS)
