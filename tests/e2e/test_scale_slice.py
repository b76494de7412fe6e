"""The bounded slice of `make bench-scale`: 20 experiments on one operator, checked for what it must do,
not for how fast (timings are the benchmark's business, docs/scale.md).

It runs bench/scale/run.py --quick as a user would (its own control plane and Prometheus, about 70 s)
and checks the counts it reports: every experiment ticks, none needs a GET of what the watches
already hold, and the Prometheus queries of a tick do not grow with the number of variants.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.e2e
@pytest.mark.slow
def test_twenty_experiments_tick_with_a_constant_number_of_requests(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "scale" / "run.py"), "--quick", "--workdir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=400,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    (run,) = report["runs"]
    assert run["n"] == 20
    assert run["phases_at_end"] == {"Progressing": 20}
    assert run["experiments_ticking"] == 20, run
    # What Kopf's watches hold is never read with a GET per tick.
    for kind in ("GET modelexperiments", "GET deployments", "GET services"):
        assert kind not in run["api_requests_by_kind"], run["api_requests_by_kind"]
    # Per tick: the ConfigMap GET that verifies the route and the status write, plus watch reconnects.
    assert run["api_requests_per_tick"] <= 3, run["api_requests_by_kind"]
    by_variants = run["prometheus_queries_per_tick_by_variants"]
    assert set(by_variants) == {"2", "3"}
    assert by_variants["2"] == by_variants["3"], by_variants
