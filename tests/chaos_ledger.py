"""The chaos suite's ledger: one JSON line per faulted run, summed into `make chaos`'s last line.

Every fault-injection test (tests/chaos/) records each run it judged with :func:`record_run`; the
records go to the JSON-lines file named by ``ARBITER_CHAOS_LOG`` (default ``.chaos/runs.jsonl``
under the repository). :func:`summarize` folds a ledger into the summary object ``make chaos``
prints as its last line::

    {"runs": 57, "faults": {"operator_sigkill": 50, ...}, "outcomes_differed": 0, "steps_lost": 0,
     "steps_doubled": 0, "max_divergence_ticks": 1, "handover_seconds_max": 3.2}
"""

from __future__ import annotations

import json
import os
import sys
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_LEDGER = ROOT / ".chaos" / "runs.jsonl"


@dataclass(frozen=True)
class ChaosRun:
    """What one faulted run showed, compared with an undisturbed run on the same data.

    Args:
        fault: the kind of fault injected, e.g. ``operator_sigkill``, ``leader_handover``,
            ``apiserver_restart``, ``etcd_restart``, ``prometheus_down``, ``prometheus_garbage``,
            ``challenger_deleted``, ``route_reapplied``.
        outcome_differed: the final phase (or decision) differs from the undisturbed run's.
        steps_lost: steps of the undisturbed run's step sequence the faulted run never served.
        steps_doubled: steps the faulted run entered more than once.
        divergence_ticks: the longest the data plane's weights disagreed with status, in ticks.
        handover_seconds: for leadership faults, seconds until a new leader acted; else None.
        detail: free-form context for a human reading the ledger (experiment name, moment, ...).
    """

    fault: str
    outcome_differed: bool
    steps_lost: int = 0
    steps_doubled: int = 0
    divergence_ticks: int = 0
    handover_seconds: float | None = None
    detail: str = ""


def ledger_path() -> Path:
    """The ledger file this process appends to."""
    return Path(os.environ.get("ARBITER_CHAOS_LOG") or DEFAULT_LEDGER)


def record_run(run: ChaosRun) -> None:
    """Append one judged run to the ledger (one JSON line, written in one call)."""
    path = ledger_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as ledger:
        ledger.write(json.dumps(asdict(run), sort_keys=True) + "\n")


def summarize(path: Path) -> dict[str, Any]:
    """Fold a ledger into the summary object (a missing or empty ledger gives zero runs)."""
    runs = []
    if path.exists():
        runs = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    handovers = [run["handover_seconds"] for run in runs if run.get("handover_seconds") is not None]
    return {
        "runs": len(runs),
        "faults": dict(sorted(Counter(run["fault"] for run in runs).items())),
        "outcomes_differed": sum(1 for run in runs if run["outcome_differed"]),
        "steps_lost": sum(int(run.get("steps_lost", 0)) for run in runs),
        "steps_doubled": sum(int(run.get("steps_doubled", 0)) for run in runs),
        "max_divergence_ticks": max((int(run.get("divergence_ticks", 0)) for run in runs), default=0),
        "handover_seconds_max": round(max(handovers), 3) if handovers else None,
    }


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else ledger_path()
    print(json.dumps(summarize(target), sort_keys=True))
