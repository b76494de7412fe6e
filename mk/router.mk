# Arbiter's model router: benchmark against nginx (see docs/router.md).

.PHONY: bench-router
bench-router: install system-deps ## Benchmark `arbiter router` vs nginx and a direct baseline with wrk (loopback, ~3 min; JSON last line; BENCH_ROUTER_ARGS="--baseline REF" adds the router as of REF)
	@$(PY) bench/router/run.py $(BENCH_ROUTER_ARGS)

.PHONY: bench-router-parsing
bench-router-parsing: install ## CPU per request of the router's HTTP parsing, in process, vs BENCH_BASELINE (a git revision, default HEAD~1); JSON last line
	@$(PY) bench/router/parsing.py --baseline $(or $(BENCH_BASELINE),HEAD~1) $(BENCH_ROUTER_PARSING_ARGS)
