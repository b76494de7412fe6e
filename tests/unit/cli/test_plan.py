"""`arbiter plan`: the public contract of its JSON and its errors."""

from __future__ import annotations

import json

import pytest

from arbiter.cli import main
from arbiter.stats import sample_size_mean, sample_size_proportion


def run_json(capsys, *argv: str) -> dict:
    assert main(["plan", *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_proportion_plan_matches_the_library_and_the_anchor(capsys):
    out = run_json(capsys, "--metric", "proportion", "--baseline", "0.15", "--mde", "0.10")
    assert (
        out["sample_size_per_variant"] == 9254 == sample_size_proportion(0.15, 0.10).sample_size_per_variant
    )
    assert out["total_sample_size"] == 2 * 9254
    assert "days" not in out
    seq = out["sequential"]
    assert (
        seq["Sequential"]["max_sample_size_per_variant"]
        > seq["GroupSequential"]["max_sample_size_per_variant"]
        > 9254
    )


def test_unequal_allocation_reports_each_arm_and_days(capsys):
    out = run_json(
        capsys, "--baseline", "0.15", "--mde", "0.10", "--allocation", "0.05", "--daily-traffic", "100000"
    )
    expected = sample_size_proportion(0.15, 0.10, allocation=0.05)
    assert out["sample_size_by_variant"] == expected.sample_size_by_variant
    assert out["sample_size_per_variant"] == expected.sample_size_by_variant["treatment"]
    assert out["total_sample_size"] == sum(expected.sample_size_by_variant.values())
    assert out["days"] == pytest.approx(out["total_sample_size"] / 100000, abs=1e-3)


def test_absolute_mde_and_one_sided(capsys):
    out = run_json(
        capsys, "--baseline", "0.15", "--mde", "0.015", "--absolute", "--sides", "1", "--alpha", "0.01"
    )
    expected = sample_size_proportion(0.15, 0.015, relative=False, sides=1, alpha=0.01)
    assert out["sample_size_per_variant"] == expected.sample_size_per_variant


def test_mean_plan(capsys):
    out = run_json(
        capsys,
        "--metric",
        "mean",
        "--baseline-mean",
        "45.2",
        "--baseline-std",
        "12.0",
        "--mde",
        "2.0",
        "--absolute",
    )
    assert out["sample_size_per_variant"] == sample_size_mean(45.2, 12.0, 2.0).sample_size_per_variant == 566


def test_human_output_spells_out_the_plan(capsys):
    assert main(["plan", "--baseline", "0.15", "--mde", "0.10", "--daily-traffic", "5000"]) == 0
    text = capsys.readouterr().out
    assert "9,254 per variant" in text and "days" in text


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--mde", "0.1"], "needs --baseline"),
        (["--baseline", "1.5", "--mde", "0.1"], "between 0 and 1"),
        (["--metric", "mean", "--mde", "2"], "--baseline-std"),
        (["--baseline", "0.15", "--mde", "0.1", "--allocation", "1.2"], "allocation"),
    ],
)
def test_bad_input_is_one_line_and_non_zero(capsys, argv, message):
    assert main(["plan", *argv]) != 0
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err


def test_an_uneven_split_names_the_smaller_arm_not_each_variant(capsys):
    """`--allocation 0.05` printed "per variant" for what is the smaller arm's size."""
    assert main(["plan", "--baseline", "0.15", "--mde", "0.10", "--allocation", "0.05"]) == 0
    text = capsys.readouterr().out
    expected = sample_size_proportion(0.15, 0.10, allocation=0.05)
    by_variant = expected.sample_size_by_variant
    assert "per variant" not in text.split("fixed horizon:")[1].splitlines()[0]
    assert f"{expected.sample_size_per_variant:,} in the smaller arm (challenger)" in text
    assert f"control {by_variant['control']:,}, challenger {by_variant['treatment']:,}" in text
    assert main(["plan", "--baseline", "0.15", "--mde", "0.10"]) == 0
    assert "per variant" in capsys.readouterr().out
