"""`arbiter analyze`: files in every format, the JSON contract, breakdowns and one-line errors."""

from __future__ import annotations

import json
import sys

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from statsmodels.stats.proportion import proportions_ztest

from arbiter.cli import main

START = 1_700_000_000
# make_table's split; without it the equal split analyze assumes is a mismatch, which voids the verdicts.
WEIGHTS = ("--expected-weights", "control=0.5,v2=0.25,v3=0.25")


def make_table(rows: int = 30_000, seed: int = 0, lift: float = 0.03) -> pa.Table:
    rng = np.random.default_rng(seed)
    variant = rng.choice(["control", "v2", "v3"], size=rows, p=[0.5, 0.25, 0.25])
    rate = np.where(variant == "v2", 0.15 + lift, 0.15)
    return pa.table(
        {
            "variant": variant,
            "outcome": (rng.random(rows) < rate).astype(np.int64),
            "latency": rng.normal(45.0, 12.0, rows),
            "timestamp": START + np.sort(rng.integers(0, 28 * 86400, rows)),
            "platform": rng.choice(["web", "ios"], size=rows),
        }
    )


def write(table: pa.Table, path, fmt: str) -> str:
    if fmt == "parquet":
        pq.write_table(table, path)
    elif fmt == "csv":
        pacsv.write_csv(table, path)
    else:
        with open(path, "w") as handle:
            for row in table.to_pylist():
                handle.write(json.dumps(row) + "\n")
    return str(path)


def analyze_json(capsys, *argv: str) -> dict:
    code = main(["analyze", *argv, "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return json.loads(captured.out)


@pytest.mark.parametrize("fmt", ["parquet", "csv", "jsonl"])
def test_every_format_gives_the_same_answer_as_statsmodels(tmp_path, capsys, fmt):
    table = make_table(rows=6000)
    path = write(table, tmp_path / f"log.{fmt}", fmt)
    out = analyze_json(capsys, path, "--expected-weights", "control=0.5,v2=0.25,v3=0.25")
    assert out["control"] == "control" and out["metric"] == "proportion"
    variant = np.array(table["variant"].to_pylist())
    outcome = np.array(table["outcome"].to_pylist())
    counts = {name: int((variant == name).sum()) for name in ("control", "v2", "v3")}
    assert out["srm"]["observed"] == counts and out["srm"]["mismatch"] is False
    by_name = {row["variant"]: row for row in out["comparisons"]}
    assert set(by_name) == {"v2", "v3"}
    p_values = []
    for name, row in by_name.items():
        _, p = proportions_ztest(
            [outcome[variant == name].sum(), outcome[variant == "control"].sum()],
            [counts[name], counts["control"]],
        )
        assert row["p_value"] == pytest.approx(p, rel=1e-9)
        assert row["n_treatment"] == counts[name] and row["n_control"] == counts["control"]
        assert row["ci_low"] < row["absolute_difference"] < row["ci_high"]
        p_values.append(p)
    assert max(r["p_value_adjusted"] for r in by_name.values()) == pytest.approx(
        max(max(p_values), 2 * min(p_values))
    )
    for key in ("control_value", "treatment_value", "relative_lift", "significant", "decision"):
        assert key in by_name["v2"]


def test_a_real_effect_is_a_win_and_human_output_says_so(tmp_path, capsys):
    path = write(make_table(rows=40_000, lift=0.04), tmp_path / "log.parquet", "parquet")
    out = analyze_json(capsys, path, *WEIGHTS)
    v2 = next(row for row in out["comparisons"] if row["variant"] == "v2")
    assert v2["significant"] and v2["decision"] == "Win"
    assert main(["analyze", path, *WEIGHTS]) == 0
    text = capsys.readouterr().out
    assert "WIN: significantly better than control" in text and "sample ratio" in text


def test_sample_ratio_mismatch_is_flagged(tmp_path, capsys):
    """The seeds' shape: 89,500 vs 10,800 rows at configured 90/10 is a mismatch."""
    variant = np.array(["v1"] * 89_500 + ["v2"] * 10_800)
    table = pa.table(
        {
            "variant": variant,
            "outcome": np.zeros(variant.size, dtype=np.int64) + (np.arange(variant.size) % 7 == 0),
        }
    )
    path = write(table, tmp_path / "srm.parquet", "parquet")
    assert main(["analyze", path, "--expected-weights", "v1=0.9,v2=0.1", "--json"]) == 3
    out = json.loads(capsys.readouterr().out)
    assert out["control"] == "v1" and out["srm"]["mismatch"] is True and out["srm"]["p_value"] < 0.001
    assert out["valid"] is False and "sample ratio mismatch" in out["invalid_reason"]


def test_a_sample_ratio_mismatch_voids_a_win_in_json_human_output_and_exit_code(tmp_path, capsys):
    """Found by a new user: a mismatched split printed "WIN" and exited 0."""
    path = write(make_table(rows=40_000, lift=0.04), tmp_path / "log.parquet", "parquet")
    mismatched = ("--expected-weights", "control=0.34,v2=0.33,v3=0.33")  # the data are 50/25/25
    assert main(["analyze", path, *mismatched, "--json"]) == 3
    out = json.loads(capsys.readouterr().out)
    v2 = next(row for row in out["comparisons"] if row["variant"] == "v2")
    assert (v2["decision"], v2["decision_if_valid"], out["valid"]) == ("Invalid", "Win", False)
    assert main(["analyze", path, *mismatched]) == 3
    text = capsys.readouterr().out
    assert "WIN" not in text and "INVALID (sample ratio mismatch; would read Win)" in text
    assert "NO VALID VERDICT" in text


def test_output_into_a_closed_pipe_ends_quietly(tmp_path):
    """`arbiter analyze ... | head -1` ended in a BrokenPipeError traceback."""
    import subprocess
    import sys
    from pathlib import Path

    path = write(make_table(rows=3000), tmp_path / "log.parquet", "parquet")
    arbiter = Path(sys.executable).with_name("arbiter")
    result = subprocess.run(
        f"'{arbiter}' analyze '{path}' {' '.join(WEIGHTS)} --segment-col timestamp | head -1",
        shell=True,
        capture_output=True,
        text=True,
        check=True,
    )
    assert len(result.stdout.splitlines()) == 1
    assert "Traceback" not in result.stderr and "BrokenPipe" not in result.stderr, result.stderr


def test_a_segment_column_with_thousands_of_values_warns_and_shows_the_largest(tmp_path, capsys):
    table = make_table(rows=6000)
    path = write(table, tmp_path / "log.parquet", "parquet")
    assert main(["analyze", path, *WEIGHTS, "--segment-col", "timestamp", "--max-segments", "5"]) == 0
    captured = capsys.readouterr()
    distinct = len(set(table["timestamp"].to_pylist()))
    assert f"has {distinct:,} segments; showing the 5 largest" in captured.err
    assert (
        len([line for line in captured.out.splitlines() if line.startswith("  ") and "p adj" in line])
        == 5 * 2
    )  # x 2 challengers
    out = analyze_json(capsys, path, *WEIGHTS, "--segment-col", "platform")
    assert (out["segments"]["total"], out["segments"]["shown"], out["segments"]["truncated"]) == (2, 2, False)


def test_mean_metric_segments_and_cohorts(tmp_path, capsys):
    path = write(make_table(rows=20_000), tmp_path / "log.parquet", "parquet")
    out = analyze_json(
        capsys,
        path,
        *WEIGHTS,
        "--outcome-col",
        "latency",
        "--segment-col",
        "platform",
        "--time-col",
        "timestamp",
    )
    assert out["metric"] == "mean" and out["comparisons"][0]["test"] == "welch-t"
    segments = out["segments"]
    assert segments["exploratory"] is True and len(segments["comparisons"]) == 4  # 2 segments x 2 challengers
    raw = [row["p_value"] for row in segments["comparisons"]]
    assert all(row["p_value_adjusted"] >= p for row, p in zip(segments["comparisons"], raw, strict=True))
    cohorts = out["cohorts"]
    assert cohorts["unit"] == "week" and {row["cohort"] for row in cohorts["comparisons"]} == {0, 1, 2, 3}
    assert all(trend["p_value"] is not None for trend in cohorts["trend"])


def test_novelty_effect_is_detected_when_the_lift_fades(tmp_path, capsys):
    rng = np.random.default_rng(3)
    rows = 200_000
    stamps = START + np.sort(rng.integers(0, 28 * 86400, rows))
    week = (stamps - START) // (7 * 86400)
    variant = rng.choice(["control", "v2"], size=rows)
    rate = np.where(variant == "v2", 0.15 + 0.04 * (3 - week) / 3, 0.15)
    table = pa.table(
        {"variant": variant, "outcome": (rng.random(rows) < rate).astype(np.int64), "timestamp": stamps}
    )
    out = analyze_json(capsys, write(table, tmp_path / "fade.parquet", "parquet"), "--time-col", "timestamp")
    trend = out["cohorts"]["trend"][0]
    assert trend["novelty_effect"] is True and trend["slope_per_cohort"] < 0


def test_sequential_replay_reports_where_it_would_have_stopped(tmp_path, capsys):
    path = write(make_table(rows=40_000, lift=0.05), tmp_path / "log.parquet", "parquet")
    out = analyze_json(
        capsys, path, *WEIGHTS, "--method", "sequential", "--time-col", "timestamp", "--looks", "10"
    )
    v2 = next(row for row in out["comparisons"] if row["variant"] == "v2")
    assert v2["test"] == "msprt" and len(v2["looks"]) == 10
    assert v2["stopped_at_look"] is not None and 1 <= v2["stopped_at_look"] <= 10
    p_values = [look["p_value"] for look in v2["looks"]]
    assert p_values == sorted(p_values, reverse=True)
    assert v2["p_value"] == p_values[-1]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--outcome-col", "missing"], "no column 'missing'"),
        (["--outcome-col", "platform"], "not numeric"),
        (["--control", "nobody"], "control variant 'nobody' not found"),
        (["--metric", "proportion", "--outcome-col", "latency"], "0/1 outcomes"),
        (["--expected-weights", "control=x"], "not a number"),
    ],
)
@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_bad_input_is_one_line_and_non_zero(tmp_path, capsys, extra, message, fmt):
    path = write(make_table(rows=500), tmp_path / f"log.{fmt}", fmt)
    assert main(["analyze", path, *extra]) != 0
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_true_false_outcomes_count_as_conversions(tmp_path, capsys, fmt):
    """A logged boolean (``true``/``false`` in CSV) is a 0/1 outcome in every format."""
    table = make_table(rows=3000, seed=4)
    flags = table.set_column(1, "outcome", pa.array([bool(x) for x in table["outcome"].to_pylist()]))
    numbers = analyze_json(capsys, write(table, tmp_path / f"n.{fmt}", fmt), *WEIGHTS)
    booleans = analyze_json(capsys, write(flags, tmp_path / f"b.{fmt}", fmt), *WEIGHTS)
    assert booleans["metric"] == "proportion"
    assert booleans["comparisons"] == numbers["comparisons"]


def test_a_csv_outcome_mixing_booleans_and_text_is_a_one_line_error(tmp_path, capsys):
    path = tmp_path / "mixed.csv"
    path.write_text("variant,outcome\na,true\nb,false\na,maybe\n")
    assert main(["analyze", str(path)]) != 0
    err = capsys.readouterr().err.strip()
    assert "outcome column 'outcome' is not numeric" in err and "maybe" in err
    assert len(err.splitlines()) == 1 and "Traceback" not in err


def test_missing_file_and_single_variant(tmp_path, capsys):
    assert main(["analyze", str(tmp_path / "nope.csv")]) != 0
    assert "no such file" in capsys.readouterr().err
    single = pa.table({"variant": ["a"] * 10, "outcome": [0, 1] * 5})
    assert main(["analyze", write(single, tmp_path / "one.parquet", "parquet")]) != 0
    assert "at least two variants" in capsys.readouterr().err


def test_without_pyarrow_analyze_says_how_to_install_it(tmp_path, capsys, monkeypatch):
    """The operator image leaves the `analyze` extra out; `arbiter analyze` there must say so in one line."""
    path = write(make_table(rows=100), tmp_path / "log.csv", "csv")
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # `import pyarrow` now raises ModuleNotFoundError
    monkeypatch.delitem(sys.modules, "arbiter.cli._datasets", raising=False)
    code = main(["analyze", path])
    captured = capsys.readouterr()
    assert code == 1
    assert captured.out == ""
    assert captured.err.strip().splitlines() == [
        "arbiter analyze: error: reading files needs pyarrow, which is not installed: "
        "pip install 'arbiter[analyze]'"
    ]
