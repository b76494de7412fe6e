# Many experiments on one operator (bench/scale). See docs/scale.md.

.PHONY: bench-scale
bench-scale: install system-deps controlplane ## N=50,200,500 experiments on one operator: tick intervals, CPU/tick, RSS, API and Prometheus requests/tick (BENCH_SCALE_NS=50,200 BENCH_SCALE_PEER=<git ref>; JSON last line)
	@$(PY) bench/scale/run.py $(BENCH_SCALE_ARGS)

.PHONY: bench-scale-quick
bench-scale-quick: install system-deps controlplane ## The bounded slice of bench-scale: N=20 at a 5 s interval, 30 s window (about 1.5 min)
	@$(PY) bench/scale/run.py --quick $(BENCH_SCALE_ARGS)
