"""`arbiter analyze --user-col`: users, not requests; leakage; exposure cohorts; the extension."""

from __future__ import annotations

import json
from datetime import datetime

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from scipy import stats as sps

from arbiter.cli import main

START = 1_700_000_000
DAY = 86400


def user_log(
    path, users: int = 3000, seed: int = 0, leaked: int = 0, lift: float = 0.0, novelty: float = 0.0
) -> str:
    """Users with their own rates and request counts; requests spread over the days after their first."""
    rng = np.random.default_rng(seed)
    variant = np.where(rng.random(users) < 0.5, "control", "v2")
    rate = rng.beta(1.0, 5.0, users)
    requests = rng.geometric(0.12, users)
    requests[:leaked] = np.maximum(requests[:leaked], 2)
    first = rng.integers(0, 10 * DAY, users)
    user = np.repeat(np.arange(users), requests)
    age = rng.integers(0, 5 * DAY, user.size)
    treated = np.repeat(variant == "v2", requests)
    # A lift that fades with the time since the user's first exposure (novelty) plus a steady one.
    p = np.clip(rate[user] + treated * (lift + novelty * np.maximum(0.0, 1 - age / (3 * DAY))), 0, 1)
    outcome = (rng.random(user.size) < p).astype(np.int64)
    logged = np.repeat(variant, requests).astype(object)
    for u in range(leaked):  # the second request of each leaked user lands in the other variant
        rows = np.flatnonzero(user == u)
        logged[rows[1]] = "v2" if logged[rows[0]] == "control" else "control"
    table = pa.table(
        {
            "variant": logged.astype(str),
            "outcome": outcome,
            "user": np.char.add("u", user.astype(str)),
            "timestamp": START + first[user] + age,
            "platform": np.where(np.repeat(np.arange(users) % 3 == 0, requests), "ios", "web"),
        }
    )
    pq.write_table(table, path)
    return str(path)


def run_json(capsys, *argv: str, code: int = 0) -> dict:
    assert main(["analyze", *argv, "--json"]) == code
    captured = capsys.readouterr()
    return json.loads(captured.out)


def test_user_level_numbers_are_the_delta_method_computed_independently(tmp_path, capsys):
    path = user_log(tmp_path / "log.parquet", seed=1)
    out = run_json(capsys, path, "--user-col", "user")
    assert out["unit"] == "user" and out["users"] == 3000
    table = pq.read_table(path).to_pandas()
    per_user = table.groupby(["user", "variant"]).outcome.agg(["sum", "count"]).reset_index()

    def linearised(name: str) -> np.ndarray:
        rows = per_user[per_user.variant == name]
        y, n = rows["sum"].to_numpy(float), rows["count"].to_numpy(float)
        ratio = y.sum() / n.sum()
        return ratio + (y - ratio * n) / n.mean()

    control, treatment = linearised("control"), linearised("v2")
    expected = sps.ttest_ind(treatment, control, equal_var=False)
    row = out["comparisons"][0]
    assert row["n_control"] == control.size and row["n_treatment"] == treatment.size
    assert row["p_value"] == pytest.approx(expected.pvalue, rel=1e-6)
    assert row["control_value"] == pytest.approx(control.mean())
    # At the request level even the split looks wrong (heavy users make request counts lumpy): exit 0 or 3.
    assert main(["analyze", path, "--json"]) in (0, 3)
    request_level = json.loads(capsys.readouterr().out)["comparisons"][0]
    # The same difference, but requests of one user are not independent: the user-level CI is wider.
    assert row["absolute_difference"] == pytest.approx(request_level["absolute_difference"], rel=1e-9)
    assert row["ci_high"] - row["ci_low"] > 1.3 * (request_level["ci_high"] - request_level["ci_low"])


def test_users_in_two_variants_are_counted_warned_about_and_left_out(tmp_path, capsys):
    path = user_log(tmp_path / "log.parquet", seed=2, leaked=40)
    assert main(["analyze", path, "--user-col", "user", "--json"]) == 0
    captured = capsys.readouterr()
    out = json.loads(captured.out)
    assert out["leakage"]["users"] == 40
    assert out["leakage"]["share"] == pytest.approx(40 / 3000)
    assert "40 users (1.33%) were seen in more than one variant" in captured.err
    # Left out: the users compared are the 2,960 that saw one variant.
    row = out["comparisons"][0]
    assert row["n_control"] + row["n_treatment"] == 2960
    assert main(["analyze", path, "--user-col", "user"]) == 0
    assert "40 users (1.33%) seen in more than one variant, left out" in capsys.readouterr().out


def test_novelty_is_found_by_exposure_age_and_timestamps_are_iso_8601(tmp_path, capsys):
    fading = user_log(tmp_path / "fading.parquet", users=8000, seed=3, novelty=0.15)
    out = run_json(capsys, fading, "--user-col", "user", "--time-col", "timestamp", "--cohort", "day")
    cohorts = out["cohorts"]
    assert cohorts["kind"] == "exposure" and cohorts["unit"] == "day"
    trend = cohorts["trend"][0]
    assert trend["over"] == "exposure_age" and trend["novelty_effect"] is True
    assert trend["by_exposure_age"][0]["absolute_difference"] > 0.08
    for row in cohorts["comparisons"]:
        datetime.fromisoformat(row["cohort_start"].replace("Z", "+00:00"))
    assert out["period"]["start"].endswith("Z")
    steady = user_log(tmp_path / "steady.parquet", users=8000, seed=3, lift=0.05)
    out = run_json(capsys, steady, "--user-col", "user", "--time-col", "timestamp", "--cohort", "day")
    assert out["cohorts"]["trend"][0]["novelty_effect"] is False


def test_an_inconclusive_result_says_how_much_longer_to_run(tmp_path, capsys):
    path = user_log(tmp_path / "log.parquet", users=600, seed=4)
    out = run_json(capsys, path, "--user-col", "user", "--time-col", "timestamp", "--mde", "0.05")
    row = out["comparisons"][0]
    assert row["decision"] == "Inconclusive"
    extend = row["extend"]
    assert extend["unit"] == "user" and not extend["reached"]
    assert extend["additional_total"] == extend["additional_control"] + extend["additional_treatment"] > 0
    assert extend["days"] == pytest.approx(extend["additional_total"] / extend["daily_traffic"])
    assert main(["analyze", path, "--user-col", "user", "--time-col", "timestamp"]) == 0
    human = capsys.readouterr().out
    assert f"extend: {extend['additional_total']:,} more users" in human
    assert "more days at the observed traffic" in human


def test_user_col_errors_are_one_line(tmp_path, capsys):
    path = user_log(tmp_path / "log.parquet", users=200, seed=5)
    assert main(["analyze", path, "--user-col", "nope"]) == 2
    assert "has no column 'nope'" in capsys.readouterr().err


def test_segments_at_the_user_level(tmp_path, capsys):
    path = user_log(tmp_path / "log.parquet", users=3000, seed=8, leaked=30)
    out = run_json(capsys, path, "--user-col", "user", "--segment-col", "platform")
    segments = out["segments"]
    assert segments["unit"] == "user" and segments["total"] == 2 and not segments["truncated"]
    by_segment = {row["segment"]: row for row in segments["comparisons"]}
    # Every user has one platform: the segments' users add up to the users compared (leaked ones left out).
    whole = out["comparisons"][0]
    assert sum(r["n_control"] + r["n_treatment"] for r in by_segment.values()) == (
        whole["n_control"] + whole["n_treatment"]
    )
    ios_users = len([u for u in range(30, 3000) if u % 3 == 0])
    assert by_segment["ios"]["n_control"] + by_segment["ios"]["n_treatment"] == ios_users
    for row in by_segment.values():
        assert row["p_value_adjusted"] >= row["p_value"]


def test_a_sequential_extension_plans_for_the_msprt_inflation(tmp_path, capsys):
    path = user_log(tmp_path / "log.parquet", users=600, seed=6)
    fixed = run_json(capsys, path, "--time-col", "timestamp")["comparisons"][0]["extend"]
    sequential = run_json(capsys, path, "--time-col", "timestamp", "--method", "sequential")
    extend = sequential["comparisons"][0]["extend"]
    assert extend["unit"] == "request" and fixed["inflation_factor"] == 1.0
    assert extend["inflation_factor"] > 1.5
    assert extend["required_control"] > 1.5 * fixed["required_control"]


def test_sequential_replay_over_looks_counts_users_seen_so_far(tmp_path, capsys):
    path = user_log(tmp_path / "log.parquet", users=4000, seed=7, lift=0.08)
    out = run_json(capsys, path, "--user-col", "user", "--time-col", "timestamp", "--method", "sequential")
    row = out["comparisons"][0]
    looks = row["looks"]
    assert len(looks) == 20 and row["decision"] == "Win"
    users_seen = [look["n_control"] + look["n_treatment"] for look in looks]
    assert users_seen == sorted(users_seen) and users_seen[-1] == row["n_control"] + row["n_treatment"]
    assert 1 <= row["stopped_at_look"] < 20
    datetime.fromisoformat(row["stopped_at_time"].replace("Z", "+00:00"))
    p_values = [look["p_value"] for look in looks]
    assert p_values == sorted(p_values, reverse=True)  # always-valid: a running minimum
