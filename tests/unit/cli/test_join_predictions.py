"""`arbiter join-predictions`: the router's prediction log of two replicas, joined and read by `arbiter analyze`."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from arbiter.cli import main
from arbiter.router.prediction_log import PredictionLog, PredictionLogOptions

FIELDS = {"class": ("outputs", "0", "data", "0"), "score": ("outputs", "1", "data", "1")}


def _body(predicted: int, score: float) -> bytes:
    return json.dumps({"id": "x", "outputs": [{"data": [predicted]}, {"data": [1 - score, score]}]}).encode()


def _write_logs(tmp_path: Path) -> tuple[list[Path], dict[str, list[int]]]:
    """Predictions served by replica A; their labels arrive at A or B by token, request id or key."""
    rng = random.Random(3)
    dirs = [tmp_path / "a", tmp_path / "b"]
    logs = [
        PredictionLog(
            PredictionLogOptions(directory=d, fields=FIELDS, max_bytes=20_000, files=50), CollectorRegistry()
        )
        for d in dirs
    ]
    truth: dict[str, list[int]] = {"v1": [], "v2": []}
    for index in range(600):
        variant = "v1" if index % 2 else "v2"
        correct = rng.random() < (0.6 if variant == "v1" else 0.8)
        logs[0].prediction(
            when=1_800_000_000 + index,
            experiment="fraud",
            variant=variant,
            request_id=f"r{index}",
            key=f"user-{index % 50}",
            status=200,
            latency=0.02,
            body=_body(index % 2, 0.3),
        )
        attribution = ("token", "requestId", "key")[index % 3]
        logs[index % 2].outcome(
            when=1_800_000_002 + index,
            experiment="fraud",
            variant=variant,
            outcome=correct,
            attribution=attribution,
            request_id=None if attribution == "key" else f"r{index}",
            issued=1_800_000_000 + index if attribution == "token" else None,
            key=f"user-{index % 50}" if attribution == "key" else None,
        )
        truth[variant].append(int(correct))
    for log in logs:
        log.close()
    return dirs, truth


def test_join_then_analyze_counts_every_outcome_once_with_its_prediction(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dirs, truth = _write_logs(tmp_path)
    assert len(list(dirs[0].glob("predictions.jsonl*"))) > 2  # rotated: the join reads every file
    out = tmp_path / "labelled.jsonl"
    assert main(["join-predictions", *map(str, dirs), "-o", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 600
    assert [r["timestamp"] for r in rows] == sorted(r["timestamp"] for r in rows)
    with_request = [r for r in rows if r["attribution"] != "key"]
    assert all(r["class"] in (0, 1) and r["score"] == 0.3 and "predictedAt" in r for r in with_request)
    assert all(len(r["user"]) == 16 for r in rows)  # the prediction's pseudonym fills a token's outcome
    assert all("predictedAt" not in r for r in rows if r["attribution"] == "key")

    capsys.readouterr()
    code = main(["analyze", str(out), "--control", "v1", "--time-col", "timestamp", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["valid"]
    (comparison,) = report["comparisons"]
    assert comparison["n_control"] == len(truth["v1"]) and comparison["n_treatment"] == len(truth["v2"])
    assert comparison["control_value"] == pytest.approx(sum(truth["v1"]) / len(truth["v1"]))
    assert comparison["treatment_value"] == pytest.approx(sum(truth["v2"]) / len(truth["v2"]))
    assert comparison["decision"] == "Win"


def test_join_reports_missing_directories_and_empty_logs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["join-predictions", str(tmp_path / "nope")]) == 2
    assert "not a directory" in capsys.readouterr().err
    (tmp_path / "log").mkdir()
    (tmp_path / "log" / "outcomes.jsonl").write_text('{"torn": \n')
    assert main(["join-predictions", str(tmp_path / "log")]) == 1
    err = capsys.readouterr().err
    assert "not JSON; skipped" in err and "no outcomes" in err
