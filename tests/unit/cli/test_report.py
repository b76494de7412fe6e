"""The HTML report, built from a promoted canary's status and synthetic Prometheus series."""

from __future__ import annotations

import datetime as dt
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from arbiter.cli import report
from arbiter.metrics.range_query import RangeSeries, step_for

START = dt.datetime(2026, 1, 1, 0, 0, tzinfo=dt.UTC).timestamp()
DECIDED = START + 600
BODY: dict[str, Any] = {
    "metadata": {"name": "fraud-v2", "namespace": "ml"},
    "spec": {
        "mode": "Canary",
        "champion": {"name": "v1"},
        "challengers": [{"name": "v2"}],
        "steps": [{"weight": 20}, {"weight": 50}],
        "analysis": {
            "primary": {"name": "conversion", "direction": "Increase"},
            "test": {"alpha": 0.05},
            "guardrails": [{"name": "latency", "max": 0.2}],
        },
    },
    "status": {
        "phase": "Promoted",
        "currentStep": 1,
        "weights": {"v1": 0, "v2": 100},
        "startedAt": "2026-01-01T00:00:00Z",
        "decision": {
            "outcome": "Promote",
            "variant": "v2",
            "reason": "v2 wins on conversion: +28.7% (p=0.0004 < 0.05)",
            "time": "2026-01-01T00:10:00Z",
        },
        "analysis": {
            "primary": {
                "metric": "conversion",
                "method": "Sequential",
                "results": [
                    {
                        "variant": "v2",
                        "verdict": "Win",
                        "controlValue": 0.1,
                        "treatmentValue": 0.1287,
                        "absoluteDifference": 0.0287,
                        "relativeLift": 0.287,
                        "ciLow": 0.011,
                        "ciHigh": 0.046,
                        "pValue": 0.0004,
                        "nControl": 4000,
                        "nTreatment": 2000,
                    }
                ],
            }
        },
        "history": [
            {"time": "2026-01-01T00:00:00Z", "from": "Pending", "to": "Progressing", "reason": "started"},
            {"time": "2026-01-01T00:10:00Z", "from": "Progressing", "to": "Promoted", "reason": "<v2> wins"},
        ],
    },
}


def series(labels: dict[str, str], values: list[float], every: float = 60.0) -> RangeSeries:
    return RangeSeries(labels=labels, points=[(START + i * every, v) for i, v in enumerate(values)])


def synthetic() -> report.Series:
    primary = {"metric": "conversion", "kind": "primary"}
    return {
        "weights": {
            "weight": [
                series({"variant": "v1"}, [0.8] * 5 + [0.5] * 5 + [0.0]),
                series({"variant": "v2"}, [0.2] * 5 + [0.5] * 5 + [1.0]),
            ],
            "step": [series({}, [0] * 5 + [1] * 6)],
        },
        "outcome": {
            "value": [
                series({**primary, "variant": "v1"}, [0.1] * 11),
                series({**primary, "variant": "v2"}, [0.12, 0.13] * 5 + [0.1287]),
            ],
            "lower": [
                series({**primary, "variant": "v1"}, [0.1 - 0.04 / (i + 1) for i in range(11)]),
                series({**primary, "variant": "v2"}, [0.12 - 0.05 / (i + 1) for i in range(11)]),
            ],
            "upper": [
                series({**primary, "variant": "v1"}, [0.1 + 0.04 / (i + 1) for i in range(11)]),
                series({**primary, "variant": "v2"}, [0.13 + 0.05 / (i + 1) for i in range(11)]),
            ],
        },
        "lift": {
            "difference": [series({**primary, "variant": "v2"}, [0.02, 0.03] * 5 + [0.0287])],
            "lower": [series({**primary, "variant": "v2"}, [-0.05 + 0.006 * i for i in range(11)])],
            "upper": [series({**primary, "variant": "v2"}, [0.1 - 0.005 * i for i in range(11)])],
        },
        "pvalue": {
            "p": [series({**primary, "variant": "v2"}, [0.5 / (i + 1) ** 3 for i in range(11)])],
            "alpha": [series({}, [0.05] * 11)],
        },
        "guardrails": {
            "value": [series({"guardrail": "latency", "variant": "v2"}, [0.1] * 11)],
            "threshold": [series({"guardrail": "latency", "bound": "max"}, [0.2] * 11)],
        },
        "srm": {"p": [series({}, [0.6] * 11)], "threshold": [series({}, [0.001] * 11)]},
        "router": {
            "rate": [
                series({"variant": "v1"}, [80.0] * 5 + [50.0] * 6),
                series({"variant": "v2"}, [20.0] * 11),
            ]
        },
        "shadow": {"agreement": []},
    }


class _Checker(HTMLParser):
    """Collects tags and the values of src/href, and fails on unbalanced elements."""

    VOID = {"meta", "br", "img", "link", "input", "hr", "col", "area", "base", "source", "wbr"}

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.tags: list[str] = []
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.links += [v or "" for k, v in attrs if k in ("src", "href", "xlink:href")]
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.links += [v or "" for k, v in attrs if k in ("src", "href", "xlink:href")]

    def handle_endtag(self, tag: str) -> None:
        assert self.stack and self.stack[-1] == tag, f"</{tag}> closes <{self.stack[-1:]}>"
        self.stack.pop()


def parse(document: str) -> _Checker:
    checker = _Checker()
    checker.feed(document)
    checker.close()
    assert checker.stack == [], f"unclosed elements: {checker.stack}"
    return checker


def test_every_section_is_there_and_nothing_is_fetched() -> None:
    document = report.build_html(BODY, synthetic(), generated_at=DECIDED + 60)
    checker = parse(document)
    assert document.startswith("<!DOCTYPE html>")
    for section in ("weights", "outcome", "lift", "pvalue", "guardrails", "srm", "router"):
        block = document.split(f'id="chart-{section}"', 1)[1].split("</section>", 1)[0]
        assert "<svg" in block, f"{section} has no chart"
        assert '<p class="caption">' in block, f"{section} has no sentence under it"
    assert 'id="chart-shadow"' not in document, "a canary has no shadow chart"
    assert "Promoted" in document and "v2 was promoted: it now serves all traffic" in document
    assert "v2 wins on conversion: +28.7%" in document
    assert "+28.70%" in document and "[0.011, 0.046]" in document and "4,000 / 2,000" in document
    assert "&lt;v2&gt; wins" in document, "the history table escapes what it shows"
    assert report.missing_charts(document) == []
    assert "script" not in checker.tags
    assert all(not re.match(r"(?i)\s*(https?:)?//", link) for link in checker.links), checker.links
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*https?://""", document)


def test_each_variants_outcome_is_drawn_with_its_interval_band() -> None:
    marks = {"origin": START, "span": 600.0, "variants": ["v1", "v2"]}
    chart = next(c for c in report.charts("ml", "fraud") if c.key == "outcome")
    assert "arbiter_experiment_metric_value_ci_lower" in chart.queries["lower"]
    svg = report.render_chart(chart, synthetic()["outcome"], marks)
    assert svg is not None
    assert "v1 interval" in svg and "v2 interval" in svg
    without = {"value": synthetic()["outcome"]["value"]}
    bare = report.render_chart(chart, without, marks)
    assert bare is not None and "interval" not in bare, (
        "no band without bounds (a status written by an older operator)"
    )


def test_the_same_input_gives_the_same_bytes() -> None:
    first = report.build_html(BODY, synthetic(), generated_at=DECIDED + 60)
    assert first == report.build_html(BODY, synthetic(), generated_at=DECIDED + 60)


def test_step_changes_and_the_decision_are_marked() -> None:
    data = synthetic()
    marks = {"origin": START, "decision": DECIDED}
    chart = next(c for c in report.charts("ml", "fraud-v2") if c.key == "weights")
    with_step = report.render_chart(chart, data["weights"], marks)
    without = report.render_chart(chart, {"weight": data["weights"]["weight"], "step": []}, marks)
    assert with_step is not None and without is not None
    assert with_step.count("step change") == 1 and "step change" not in without
    assert ">decision<" in with_step and ">minutes since the start<" in with_step


def test_without_prometheus_the_report_says_which_charts_are_missing() -> None:
    document = report.build_html(BODY, {}, generated_at=DECIDED, prometheus_problem="cannot reach it")
    parse(document)
    assert "Prometheus could not be asked (cannot reach it)" in document
    assert report.missing_charts(document) == [
        "Traffic weights",
        "Outcome rate per variant",
        "Difference and its confidence sequence",
        "p-value against alpha",
        "Guardrails against thresholds",
        "Sample ratio check",
        "Requests per second per variant (router)",
    ]
    assert 'id="results"' in document and 'id="history"' in document


def test_write_report_against_an_unreachable_prometheus_warns_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output = tmp_path / "r.html"
    missing = report.write_report(BODY, output, "http://127.0.0.1:9", now=DECIDED + 60)
    assert len(missing) == 7 and output.read_text().startswith("<!DOCTYPE html>")
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("warning: cannot reach Prometheus at http://127.0.0.1:9")


def test_a_shadow_experiment_gets_its_agreement_chart() -> None:
    body = {**BODY, "spec": {**BODY["spec"], "mode": "Shadow"}}
    data = synthetic()
    data["shadow"] = {"agreement": [series({"variant": "v2"}, [0.9, 0.95, 0.97])]}
    document = report.build_html(body, data, generated_at=DECIDED)
    assert "<svg" in document.split('id="chart-shadow"', 1)[1].split("</section>", 1)[0]


def test_lifetime_runs_from_the_start_to_the_decision() -> None:
    start, end = report.lifetime(BODY, now=DECIDED + 3600)
    assert start == START - report.MARGIN_SECONDS and end == DECIDED + report.MARGIN_SECONDS
    assert step_for(start, end) == pytest.approx((end - start) / 400)


def test_the_time_axis_uses_a_unit_that_fits_the_run() -> None:
    assert report.time_unit(45) == (1.0, "seconds")
    assert report.time_unit(1800) == (60.0, "minutes")
    assert report.time_unit(86400) == (3600.0, "hours")


def test_a_variant_has_the_same_colour_in_every_chart() -> None:
    document = report.build_html(BODY, synthetic(), generated_at=DECIDED + 60)
    champion, challenger = report._palette(["v1", "v2"]).values()
    for section in ("weights", "outcome"):
        block = document.split(f'id="chart-{section}"', 1)[1].split("</section>", 1)[0]
        assert champion in block and challenger in block, section
    lift = document.split('id="chart-lift"', 1)[1].split("</section>", 1)[0]
    assert challenger in lift and champion not in lift


def test_the_demo_artifacts_say_how_the_experiment_ended(tmp_path: Path) -> None:
    import json

    paths = report.write_demo_artifacts(
        BODY, tmp_path / ".demo", None, scenario="canary", take_screenshot=False
    )
    assert paths["report"].read_text().startswith("<!DOCTYPE html>")
    result = json.loads(paths["result"].read_text())
    assert result == {
        "scenario": "canary",
        "phase": "Promoted",
        "decision": "Promote",
        "reason": "v2 wins on conversion: +28.7% (p=0.0004 < 0.05)",
        "steps_completed": 2,
        "duration_seconds": 600.0,
        "rollback_seconds": None,
        "samples": {"v1": 4000, "v2": 2000},
    }


def test_a_rolled_back_demo_says_how_long_the_challenger_served_its_last_step(tmp_path: Path) -> None:
    import copy
    import json

    body = copy.deepcopy(BODY)
    status = body["status"]
    status["phase"] = "RolledBack"
    status["decision"] = {**status["decision"], "outcome": "Rollback", "reason": "guardrail breached"}
    decided = report._timestamp(status["decision"]["time"])
    assert decided is not None
    status["stepStartedAt"] = dt.datetime.fromtimestamp(decided - 42, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    paths = report.write_demo_artifacts(body, tmp_path, None, scenario="latency", take_screenshot=False)
    result = json.loads(paths["result"].read_text())
    assert (result["phase"], result["rollback_seconds"]) == ("RolledBack", 42.0)


def test_arbiter_report_against_an_unreachable_api_server_is_one_line(tmp_path: Path) -> None:
    import subprocess
    import sys

    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\n"
        'clusters: [{name: c, cluster: {server: "https://127.0.0.1:1"}}]\n'
        "users: [{name: u, user: {token: abc}}]\n"
        "contexts: [{name: x, context: {cluster: c, user: u, namespace: ml}}]\n"
        "current-context: x\n"
    )
    result = subprocess.run(
        [str(Path(sys.executable).with_name("arbiter")), "report", "x", "--kubeconfig", str(kubeconfig)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
    )
    assert result.returncode == 3 and result.stdout == ""
    assert result.stderr.startswith("error: cannot reach the API server at https://127.0.0.1:1: ")
    assert result.stderr.count("\n") == 1 and not (tmp_path / "x-report.html").exists()


def test_a_status_captured_from_the_demo_renders_every_section() -> None:
    """A real promoted canary's object (make demo, tests/data/report), with synthetic series."""
    import json

    body = json.loads((Path(__file__).parents[2] / "data" / "report" / "canary-promoted.json").read_text())
    status = body["status"]
    document = report.build_html(body, synthetic(), generated_at=DECIDED)
    parse(document)
    assert "The challenger v2 was promoted" in document
    assert report.html.escape(status["decision"]["reason"]) in document
    history = document.split('id="history"', 1)[1]
    assert history.count("<tr>") == len(status["history"]) + 1
    assert report.missing_charts(document) == []
