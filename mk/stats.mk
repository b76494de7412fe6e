.PHONY: bench-stats
bench-stats: install ## Simulate naive/sequential/group-sequential/fixed designs, check the decision forecast, time `arbiter analyze` on 10M rows; last line is JSON
	@$(PY) bench/stats/bench_stats.py $(BENCH_STATS_ARGS)
