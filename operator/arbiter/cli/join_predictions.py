"""`arbiter join-predictions`: the router's prediction log, one row per labelled prediction, for `arbiter analyze`.

The router writes `predictions.jsonl` and `outcomes.jsonl` (rotated: `.1`, `.2`, ...) into its
`--prediction-log` directory, one directory per replica. This joins every outcome to the prediction it
labels (by request id: the token's, or the one the feedback named) across all the directories given,
and writes JSON lines whose columns `arbiter analyze` reads as they are::

    arbiter join-predictions log-a/ log-b/ -o labelled.jsonl
    arbiter analyze labelled.jsonl --time-col timestamp      # variant and outcome are the defaults

Each row is the outcome line (`timestamp` = when the label arrived, `variant` = the variant it was
counted for online, `outcome`, `attribution`, `requestId`, `user`) plus, when the prediction was found,
`predictedAt`, `latencyMs`, `status` and the configured response fields (e.g. `class`, `score`); the
prediction's `user` fills in a missing one. Outcomes attributed by `key` name no request: they keep
their own columns. Rows are in time order.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

_PREDICTION_ONLY = ("experiment", "timestamp", "variant", "requestId", "user")


def register(subparsers: Any) -> None:
    """Add the `join-predictions` subcommand."""
    parser = subparsers.add_parser(
        "join-predictions",
        help="join the router's prediction log with its outcomes into rows `arbiter analyze` reads",
        description=__doc__.split("\n\n")[1] if __doc__ else None,
    )
    parser.add_argument("directories", nargs="+", metavar="DIR", help="router --prediction-log directories")
    parser.add_argument("-o", "--output", metavar="FILE", help="where to write (default: standard output)")
    parser.add_argument("--experiment", help="keep only this experiment's rows")
    parser.set_defaults(func=run)


def _files(directory: Path, name: str) -> list[Path]:
    """Rotated files oldest first: name.N ... name.1, name."""
    rotated = [p for p in directory.glob(f"{name}.*") if p.name[len(name) + 1 :].isdigit()]
    rotated.sort(key=lambda p: -int(p.name[len(name) + 1 :]))
    current = directory / name
    return rotated + ([current] if current.is_file() else [])


def _lines(path: Path) -> Any:
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                # A replica killed mid-write leaves a torn last line; say so and go on.
                print(f"warning: {path}:{number} is not JSON; skipped", file=sys.stderr)
                continue
            if isinstance(row, dict):
                yield row


def join(directories: list[Path], experiment: str | None = None) -> list[dict[str, Any]]:
    """Outcome rows joined to their predictions, in time order (see the module docstring)."""
    predictions: dict[str, dict[str, Any]] = {}
    for directory in directories:
        for path in _files(directory, "predictions.jsonl"):
            for row in _lines(path):
                if row.get("requestId") is not None and (
                    experiment is None or row.get("experiment") == experiment
                ):
                    predictions[str(row["requestId"])] = row
    rows: list[dict[str, Any]] = []
    for directory in directories:
        for path in _files(directory, "outcomes.jsonl"):
            for row in _lines(path):
                if "variant" not in row or "outcome" not in row:
                    continue
                if experiment is not None and row.get("experiment") != experiment:
                    continue
                prediction = predictions.get(str(row.get("requestId"))) if row.get("requestId") else None
                if prediction is not None and prediction.get("experiment") == row.get("experiment"):
                    joined = dict(row)
                    joined["predictedAt"] = prediction.get("timestamp")
                    if joined.get("user") is None:
                        joined["user"] = prediction.get("user")
                    for name, value in prediction.items():
                        if name not in _PREDICTION_ONLY and name not in joined:
                            joined[name] = value
                    row = joined
                rows.append(row)
    rows.sort(key=lambda r: str(r.get("timestamp", "")))
    return rows


def run(args: argparse.Namespace) -> int:
    """Join and write; exit 2 for a directory that is missing, 1 when there is nothing to write."""
    directories = [Path(d) for d in args.directories]
    missing = [str(d) for d in directories if not d.is_dir()]
    if missing:
        print(f"error: not a directory: {', '.join(missing)}", file=sys.stderr)
        return 2
    rows = join(directories, args.experiment)
    if not rows:
        print("error: no outcomes in the prediction log (was feedback posted?)", file=sys.stderr)
        return 1
    text = "".join(json.dumps(row, separators=(",", ":"), ensure_ascii=False) + "\n" for row in rows)
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
        matched = sum(1 for row in rows if "predictedAt" in row)
        print(f"{len(rows)} outcomes, {matched} joined to their prediction -> {args.output}", file=sys.stderr)
    else:
        try:
            sys.stdout.write(text)
            sys.stdout.flush()
        except BrokenPipeError:  # `| head`
            return 0
    return 0
