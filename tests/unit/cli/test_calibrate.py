"""`arbiter calibrate`: the false-rollback rate of a configuration, on an A/A log, from flags or a spec."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from arbiter.cli import main

START = 1_700_000_000
SPEC = """
apiVersion: arbiter.dev/v1alpha1
kind: ModelExperiment
metadata: {name: fraud}
spec:
  mode: Canary
  champion: {name: v1, deployment: fraud-v1, service: fraud-v1}
  challengers: [{name: v2, deployment: fraud-v2, service: fraud-v2}]
  routing: {provider: Router, stickiness: {header: x-user}, router: {configMap: fraud-router}}
  steps: [{weight: 20}]
  analysis:
    primary:
      name: caught
      type: Proportion
      successes: 'sum(a{variant="{{variant}}"})'
      trials: 'sum(b{variant="{{variant}}"})'
      minimumDetectableEffect: 0.1
    guardrails:
      - name: errors
        maxIncreaseOverChampion: 0.005
        failureLimit: 2
        rate:
          type: Proportion
          successes: 'sum(e{variant="{{variant}}"})'
          trials: 'sum(b{variant="{{variant}}"})'
    test: {method: FixedHorizon, alpha: 0.05, power: 0.8}
"""


def aa_log(path, rows: int = 30_000, seed: int = 0, fmt: str = "parquet") -> str:
    rng = np.random.default_rng(seed)
    table = pa.table(
        {
            "variant": np.full(rows, "v1"),
            "outcome": (rng.random(rows) < 0.15).astype(np.int64),
            "error": (rng.random(rows) < 0.02).astype(np.int64),
            "latency": rng.gamma(4.0, 10.0, rows),
            "user": np.char.add("u", rng.integers(0, 5000, rows).astype(str)),
            "timestamp": START + np.sort(rng.integers(0, 7 * 86400, rows)),
        }
    )
    if fmt == "csv":
        pacsv.write_csv(table, path)
    else:
        pq.write_table(table, path)
    return str(path)


def calibrate_json(capsys, *argv: str) -> dict:
    code = main(["calibrate", *argv, "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return json.loads(captured.out)


def test_flags_give_the_rate_its_interval_and_its_causes(tmp_path, capsys):
    path = aa_log(tmp_path / "aa.parquet")
    out = calibrate_json(
        capsys,
        path,
        "--time-col",
        "timestamp",
        "--method",
        "fixed",
        "--mde",
        "0.1",
        "--guardrail",
        "errors:error:increase=0.005,limit=2",
        "--guardrail",
        "latency:latency:increase=1.0,critical",
        "--replicates",
        "60",
    )
    assert out["unit"] == "request" and out["units"] == 30_000 and out["replicates"] == 60
    assert out["test"]["method"] == "FixedHorizon" and out["test"]["metric"] == "Proportion"
    assert [g["metric"] for g in out["guardrails"]] == ["Proportion", "Mean"]
    assert out["guardrails"][1]["critical"] is True and out["guardrails"][0]["failure_limit"] == 2
    assert out["rolled_back"] == round(out["false_rollback_rate"] * 60)
    assert out["false_rollback_ci_low"] <= out["false_rollback_rate"] <= out["false_rollback_ci_high"]
    counted = out["rolled_back"] + out["promoted"] + out["concluded"] + out["undecided"]
    assert counted == 60
    assert out["period"]["start"] == "2023-11-14T22:13:20Z"
    # The same seed gives the same answer; another seed another sample of re-assignments.
    again = calibrate_json(
        capsys,
        path,
        "--time-col",
        "timestamp",
        "--method",
        "fixed",
        "--mde",
        "0.1",
        "--guardrail",
        "errors:error:increase=0.005,limit=2",
        "--guardrail",
        "latency:latency:increase=1.0,critical",
        "--replicates",
        "60",
    )
    assert again["rolled_back"] == out["rolled_back"]


def test_a_spec_sets_the_test_guardrails_and_share_as_the_operator_would(tmp_path, capsys):
    spec = tmp_path / "experiment.yaml"
    spec.write_text(SPEC)
    path = aa_log(tmp_path / "aa.csv", fmt="csv")
    out = calibrate_json(
        capsys,
        path,
        "--spec",
        str(spec),
        "--guardrail-col",
        "errors=error",
        "--user-col",
        "user",
        "--replicates",
        "30",
    )
    assert out["unit"] == "user"
    assert out["units"] == len(set(pacsv.read_csv(path)["user"].to_pylist()))
    assert out["share"] == pytest.approx(0.2)
    assert out["test"] == {
        "metric": "Proportion",
        "method": "FixedHorizon",
        "direction": "Increase",
        "mde": 0.1,
        "alpha": 0.05,
        "power": 0.8,
    }
    assert out["guardrails"] == [
        {
            "name": "errors",
            "column": "error",
            "metric": "Proportion",
            "max_increase": 0.005,
            "max_decrease": None,
            "failure_limit": 2,
            "critical": False,
        }
    ]
    # A guardrail's column defaults to its name, which this log does not have.
    assert main(["calibrate", path, "--spec", str(spec), "--replicates", "5"]) == 2
    assert "has no column 'errors'" in capsys.readouterr().err
    assert (
        main(["calibrate", path, "--spec", str(spec), "--guardrail-col", "errors=error", "--replicates", "5"])
        == 0
    )
    human = capsys.readouterr().out
    assert "false-rollback rate:" in human and "over 5 A/A pseudo-experiments" in human


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--guardrail", "errors:error"], "--guardrail wants NAME:COLUMN:increase=M"),
        (["--guardrail", "errors:error:limit=2"], "needs increase=M or decrease=M"),
        (["--guardrail", "errors:nope:increase=0.1"], "has no column 'nope'"),
        (["--outcome-col", "latency", "--metric", "proportion"], "needs 0/1 outcomes"),
        (["--variant", "v9"], "fewer than two usable rows of variant 'v9'"),
        (["--share", "1.5"], "share must be between 0 and 1"),
        (["--spec", "/nonexistent.yaml"], "cannot read --spec"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(tmp_path, capsys, argv, message):
    path = aa_log(tmp_path / "aa.parquet", rows=2000)
    assert main(["calibrate", path, "--replicates", "2", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
