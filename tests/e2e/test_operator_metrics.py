"""The operator's per-experiment metrics and the Grafana dashboards, on real parts.

The operator runs as a process and a real Prometheus scrapes it (and the test's router) every second,
while an experiment runs through its steps. The tests check that every series the operator serves
carries the numbers of the experiment's status (read from the API server at the same moment), that
the exposition passes ``promtool check metrics``, that a deleted experiment's series disappear, and
that every PromQL expression of the dashboards in charts/arbiter/dashboards, with its variables filled
in, returns data from that Prometheus.
"""

from __future__ import annotations

import html
import json
import os
import subprocess
import sys
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from harness.env import RolloutEnv
from harness.experiment import (
    agreement_guardrail,
    conversion_metric,
    get_experiment,
    latency_guardrail,
    wait_for_phase,
    wait_for_status,
)
from prometheus_client.parser import text_string_to_metric_families

import arbiter
from arbiter_fixtures import ROOT, OperatorProcess
from helpers import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(300)]

DASHBOARDS = sorted((ROOT / "charts" / "arbiter" / "dashboards").glob("*.json"))
PHASES = ["Pending", "Progressing", "Paused", "Promoted", "RolledBack", "Concluded", "Failed"]
#: What the dashboards' Grafana variables become in the queries sent to Prometheus.
RATE_INTERVAL = "1m"

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(operator: OperatorProcess) -> tuple[str, Samples]:
    """The operator's /metrics text and its samples as Prometheus parses them."""
    text = operator.metrics()
    samples = {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    return text, samples


def of(samples: Samples, name: str, **labels: str) -> float | None:
    found = [v for (n, ls), v in samples.items() if n == name and set(labels.items()) <= ls]
    assert len(found) <= 1, (name, labels, found)
    return found[0] if found else None


def mismatches(body: dict[str, Any], samples: Samples) -> list[str]:
    """Every way the scraped series differ from what the experiment's status (and spec) say."""
    meta, spec, status = body["metadata"], body["spec"], body.get("status") or {}
    exp = {"namespace": meta["namespace"], "experiment": meta["name"]}
    wrong: list[str] = []

    def expect(name: str, want: Any, **labels: str) -> None:
        got = of(samples, name, **exp, **labels)
        if want is None:
            if got is not None:
                wrong.append(f"{name}{labels}: {got} but the status has none")
        elif got is None or got != pytest.approx(float(want), rel=1e-9, abs=1e-12):
            wrong.append(f"{name}{labels}: scraped {got}, status {want}")

    phase = status.get("phase")
    for value in PHASES:
        expect("arbiter_experiment_phase", int(value == phase), phase=value)
    expect("arbiter_experiment_info", 1, phase=phase, mode=spec["mode"], champion=spec["champion"]["name"])
    expect("arbiter_experiment_current_step", status.get("currentStep"))
    expect("arbiter_experiment_steps", len(spec.get("steps") or []) or None)
    for variant, weight in (status.get("weights") or {}).items():
        expect("arbiter_experiment_variant_weight_ratio", weight / 100, variant=variant)
    expect("arbiter_experiment_alpha", spec["analysis"]["test"]["alpha"])
    primary = (status.get("analysis") or {}).get("primary") or {}
    for row in primary.get("variants") or []:
        labels = {"metric": primary["metric"], "kind": "primary"}
        expect("arbiter_experiment_metric_value_ci_lower", row.get("ciLow"), **labels, variant=row["variant"])
        expect(
            "arbiter_experiment_metric_value_ci_upper", row.get("ciHigh"), **labels, variant=row["variant"]
        )
    for result in primary.get("results") or []:
        labels = {"metric": primary["metric"], "kind": "primary"}
        variant = result["variant"]
        expect("arbiter_experiment_metric_value", result["controlValue"], **labels, variant="v1")
        expect("arbiter_experiment_metric_value", result["treatmentValue"], **labels, variant=variant)
        expect(
            "arbiter_experiment_metric_absolute_difference",
            result["absoluteDifference"],
            **labels,
            variant=variant,
        )
        expect("arbiter_experiment_metric_relative_lift", result["relativeLift"], **labels, variant=variant)
        expect("arbiter_experiment_metric_difference_ci_lower", result["ciLow"], **labels, variant=variant)
        expect("arbiter_experiment_metric_difference_ci_upper", result["ciHigh"], **labels, variant=variant)
        expect("arbiter_experiment_metric_p_value", result["pValue"], **labels, variant=variant)
        expect(
            "arbiter_experiment_metric_p_value_adjusted",
            result.get("pValueAdjusted"),
            **labels,
            variant=variant,
        )
        expect("arbiter_experiment_metric_verdict", 1, **labels, variant=variant, verdict=result["verdict"])
        # The samples since the start are the primary metric's trials (no sampleCount query here).
        expect("arbiter_experiment_samples", result["nControl"], variant="v1")
        expect("arbiter_experiment_samples", result["nTreatment"], variant=variant)
    for guardrail in spec["analysis"]["guardrails"]:
        if "max" in guardrail:
            expect(
                "arbiter_experiment_guardrail_threshold",
                guardrail["max"],
                guardrail=guardrail["name"],
                bound="max",
            )
    for state in status.get("guardrails") or []:
        labels = {"guardrail": state["name"], "variant": state["variant"]}
        expect("arbiter_experiment_guardrail_value", state.get("value"), **labels)
        expect("arbiter_experiment_guardrail_consecutive_breaches", state["breaches"], **labels)
        expect("arbiter_experiment_guardrail_breached", int(state["breached"]), **labels)
    srm = (status.get("analysis") or {}).get("srm") or {}
    expect("arbiter_experiment_srm_p_value", srm.get("pValue"))
    return wrong


def matching_scrape(
    operator: OperatorProcess, kube_api: Any, namespace: str, name: str, ready: Any
) -> tuple[str, dict[str, Any]]:
    """A scrape taken while the status stood still, and that status, once ``ready(status)`` and they agree.

    The operator updates its series when it writes the status, so a scrape may briefly run ahead of
    what a reader of the API server sees; the status is read before and after the scrape, and the
    pair counts only when both reads are the same object version.
    """
    last: list[str] = []
    seen: list[str | None] = []

    def attempt() -> tuple[str, dict[str, Any]] | None:
        nonlocal last
        before = get_experiment(kube_api, namespace, name)
        text, samples = scrape(operator)
        after = get_experiment(kube_api, namespace, name)
        status = after.get("status") or {}
        if before["metadata"]["resourceVersion"] != after["metadata"]["resourceVersion"] or not ready(status):
            seen.append(status.get("phase"))
            return None
        last = mismatches(after, samples)
        return None if last else (text, after)

    try:
        return wait_for(attempt, timeout=60, interval=0.3, message="a scrape that matches the status")
    except AssertionError as err:
        raise AssertionError(
            f"{err}\nlast mismatches: {last}\nphases while not ready or moving: {sorted(set(map(str, seen)))}"
        ) from None


def promtool_check(text: str) -> None:
    result = subprocess.run(
        ["promtool", "check", "metrics"], input=text, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, f"promtool check metrics:\n{result.stdout}{result.stderr}"


@pytest.fixture
def scraped_operator(operator: OperatorProcess, prometheus: Any, namespace: str) -> Iterator[OperatorProcess]:
    """The test's operator, scraped by the session's Prometheus every second as job arbiter-operator-<ns>."""
    job = f"arbiter-operator-{namespace}"
    prometheus.add_target(job, [operator.metrics_url.split("/")[2]], scrape_interval="1s")
    try:
        prometheus.wait_for_target_up(job, timeout=30)
        yield operator
    finally:
        prometheus.remove_target(job)


def dashboard_queries(*, shadow: bool) -> list[tuple[str, str, str]]:
    """(dashboard, panel or annotation, PromQL) of every query; ``shadow`` picks the Shadow panels."""
    out = []
    for path in DASHBOARDS:
        board = json.loads(path.read_text())
        for panel in board["panels"]:
            if panel["title"].startswith("Shadow") != shadow:
                continue
            out += [(path.stem, panel["title"], t["expr"]) for t in panel["targets"]]
        if not shadow:
            out += [
                (path.stem, f"annotation {a['name']}", a["expr"])
                for a in board["annotations"]["list"]
                if "expr" in a
            ]
    return out


def fill(expr: str, namespace: str, experiment: str) -> str:
    return (
        expr.replace("$namespace", namespace)
        .replace("$experiment", experiment)
        .replace("$__rate_interval", RATE_INTERVAL)
    )


def queries_without_data(
    prometheus: Any, queries: list[tuple[str, str, str]], namespace: str, experiment: str
) -> list[str]:
    empty = []
    for board, title, expr in queries:
        if not prometheus.query(fill(expr, namespace, experiment)):
            empty.append(f"{board} / {title}: {fill(expr, namespace, experiment)}")
    return empty


def label_values(prometheus: Any, label: str, match: str) -> list[str]:
    """What Grafana's label_values(match, label) asks Prometheus for."""
    url = f"{prometheus.url}/api/v1/label/{label}/values?" + urllib.parse.urlencode({"match[]": match})
    with urllib.request.urlopen(url, timeout=10) as response:
        return list(json.loads(response.read())["data"])


def test_operator_metrics_follow_the_status_and_every_dashboard_panel_has_data(
    rollout_env: Any, scraped_operator: OperatorProcess, kube_api: Any, prometheus: Any, cluster: Any
) -> None:
    """A canary that wins through two steps: the series match the status mid-run and at the end."""
    name = "observed"
    env: RolloutEnv = rollout_env(experiment=name)
    operator = scraped_operator
    env.apply(
        [
            env.experiment(
                steps=[{"weight": 20, "minDuration": "4s"}, {"weight": 50, "minDuration": "4s"}],
                guardrails=[latency_guardrail(max_seconds=0.5)],
                primary=conversion_metric(mde=0.2),
            )
        ]
    )
    env.traffic({"v1": 0.10, "v2": 0.15}, rate=150, max_seconds=200, seed=41)

    # While it runs: the scrape carries the status's numbers, and is valid exposition format.
    text, _ = matching_scrape(
        operator,
        kube_api,
        env.namespace,
        name,
        lambda s: (
            s.get("phase") == "Progressing"
            and ((s.get("analysis") or {}).get("primary") or {}).get("results")
        ),
    )
    promtool_check(text)
    _, samples = scrape(operator)
    assert of(samples, "arbiter_build_info", version=arbiter.__version__) == 1
    assert (
        of(samples, "arbiter_experiment_step_samples", namespace=env.namespace, experiment=name, variant="v1")
        is not None
    )

    promoted = wait_for_phase(
        kube_api,
        env.namespace,
        name,
        "Promoted",
        timeout=180,
        forbid_phases={"RolledBack", "Concluded", "Failed", "Paused"},
    )
    text, final = matching_scrape(
        operator, kube_api, env.namespace, name, lambda s: s.get("phase") == "Promoted"
    )
    promtool_check(text)
    assert final["status"]["weights"] == {"v1": 0, "v2": 100}

    # status.leading (written by the operator) names the winner with its numbers; `kubectl get -o wide` shows it.
    result = next(r for r in promoted["analysis"]["primary"]["results"] if r["variant"] == "v2")
    assert final["status"]["leading"] == {
        "variant": "v2",
        "relativeLift": result["relativeLift"],
        "pValue": result["pValue"],
    }
    wide = cluster.kubectl("get", "mexp", name, "-n", env.namespace, "-o", "wide").stdout.splitlines()
    header, row = wide[0].split(), wide[1].split()
    assert header[-5:] == ["LEADER", "LIFT", "P-VALUE", "DECIDE-IN", "P-WIN"]
    cells = dict(zip(header, row, strict=True))
    assert cells["LEADER"] == "v2"
    assert float(cells["LIFT"]) == pytest.approx(result["relativeLift"], rel=1e-3)
    assert float(cells["P-VALUE"]) == pytest.approx(result["pValue"], rel=1e-3, abs=1e-9)

    # Every dashboard query, variables filled in, returns data from the Prometheus that scrapes it all.
    assert env.namespace in label_values(prometheus, "namespace", "arbiter_experiment_info")
    assert name in label_values(
        prometheus, "experiment", f'arbiter_experiment_info{{namespace="{env.namespace}"}}'
    )
    queries = dashboard_queries(shadow=False)
    assert len(queries) > 20, queries
    wait_for(
        lambda: not queries_without_data(prometheus, queries, env.namespace, name),
        timeout=30,
        interval=1,
        message=f"every dashboard query to return data; still empty: "
        f"{queries_without_data(prometheus, queries, env.namespace, name)}",
    )

    # A deleted experiment takes its series with it.
    cluster.kubectl("delete", "mexp", name, "-n", env.namespace, "--wait=true", "--timeout=60s")

    def gone() -> bool:
        _, samples = scrape(operator)
        return not [
            key
            for key in samples
            if ("experiment", name) in key[1] and ("namespace", env.namespace) in key[1]
        ]

    wait_for(gone, timeout=30, message="the deleted experiment's series to disappear")
    _, samples = scrape(operator)
    assert of(samples, "arbiter_experiments", phase="Promoted") == 0


def test_shadow_agreement_is_exported_and_the_shadow_panels_have_data(
    rollout_env: Any, scraped_operator: OperatorProcess, kube_api: Any, prometheus: Any
) -> None:
    """A shadow that agrees with the champion: agreement 1.0 and the mirrored share, while it is judged."""
    name = "mirrored"
    env: RolloutEnv = rollout_env(experiment=name, answer_like={"v2": "v1"})
    env.apply(
        [
            env.experiment(
                mode="Shadow",
                guardrails=[agreement_guardrail(0.95)],
                shadow={"percent": 100, "timeoutSeconds": 2},
                shadow_analysis={"minDuration": "10m"},
            )
        ]
    )
    env.traffic({"v1": 0.1}, rate=100, max_seconds=120, seed=42)
    wait_for_status(
        kube_api,
        env.namespace,
        name,
        lambda s: any(g.get("value") == 1.0 for g in s.get("guardrails") or []),
        timeout=60,
        message="the agreement guardrail to read 1.0",
    )
    exp = {"namespace": env.namespace, "experiment": name, "variant": "v2"}
    wait_for(
        lambda: of(scrape(scraped_operator)[1], "arbiter_experiment_shadow_agreement_ratio", **exp) == 1.0,
        timeout=30,
        message="the operator to export the agreement",
    )
    text, samples = scrape(scraped_operator)
    assert of(samples, "arbiter_experiment_shadow_mirror_ratio", **exp) == 1.0
    promtool_check(text)
    queries = dashboard_queries(shadow=True)
    assert {title for _, title, _ in queries} == {
        "Shadow agreement",
        "Shadow mirrored share",
        "Shadow latency delta",
    }
    wait_for(
        lambda: not queries_without_data(prometheus, queries, env.namespace, name),
        timeout=30,
        interval=1,
        message=f"every shadow panel to return data; still empty: "
        f"{queries_without_data(prometheus, queries, env.namespace, name)}",
    )


def open_in_chromium(page: Path, out: Path) -> tuple[Path, str, list[str]]:
    """Open ``page`` in headless Chromium: its screenshot, its DOM, and what it logged to the console."""
    browser = ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr", "--v=0"]
    png = out / "report.png"
    shot = subprocess.run(
        [*browser, f"--screenshot={png}", "--window-size=1200,4200", page.resolve().as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    dom = subprocess.run(
        [*browser, "--dump-dom", page.resolve().as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    console = [line for line in (shot.stderr + dom.stderr).splitlines() if ":CONSOLE" in line]
    return png, dom.stdout, console


def test_the_report_of_a_decided_canary_opens_in_a_browser_with_every_chart(
    rollout_env: Any,
    scraped_operator: OperatorProcess,
    kube_api: Any,
    prometheus: Any,
    cluster: Any,
    tmp_path: Path,
) -> None:
    """`kubectl arbiter report` on a canary that won, from the real status and the real Prometheus."""
    from PIL import Image, ImageStat

    name = "reported"
    env: RolloutEnv = rollout_env(experiment=name)
    env.apply(
        [
            env.experiment(
                steps=[{"weight": 20, "minDuration": "4s"}, {"weight": 50, "minDuration": "4s"}],
                guardrails=[latency_guardrail(max_seconds=0.5)],
                primary=conversion_metric(mde=0.2),
            )
        ]
    )
    env.traffic({"v1": 0.10, "v2": 0.15}, rate=150, max_seconds=200, seed=43)
    wait_for_phase(
        kube_api,
        env.namespace,
        name,
        "Promoted",
        timeout=180,
        forbid_phases={"RolledBack", "Concluded", "Failed"},
    )
    # The last scrapes of the decided experiment are in Prometheus before the report asks for them.
    wait_for(
        lambda: prometheus.query(
            f'arbiter_experiment_phase{{namespace="{env.namespace}",experiment="{name}",phase="Promoted"}} == 1'
        ),
        timeout=30,
        message="Prometheus to have scraped the promotion",
    )
    page = tmp_path / "report.html"
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "kubectl-arbiter"),
            "report",
            name,
            "-n",
            env.namespace,
            "-o",
            str(page),
            "--prometheus-url",
            prometheus.url,
        ],
        env={**os.environ, "KUBECONFIG": cluster.kubeconfig},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == "", "every chart had data: no warning"
    document = page.read_text()
    body = get_experiment(kube_api, env.namespace, name)
    assert body["status"]["decision"]["reason"] in html.unescape(document)
    assert "was promoted: it now serves all traffic" in document

    png, dom, console = open_in_chromium(page, tmp_path)
    assert console == [], console
    for chart in ("weights", "outcome", "lift", "pvalue", "guardrails", "srm", "router"):
        section = dom.split(f'id="chart-{chart}"', 1)[1].split("</section>", 1)[0]
        assert "<svg" in section and "No data" not in section, f"{chart} is not drawn"
    assert 'id="history"' in dom and "Promoted" in dom
    image = Image.open(png).convert("L")
    assert image.size == (1200, 4200)
    assert ImageStat.Stat(image).stddev[0] > 20, "the screenshot is blank"
    # Charts are drawn in the top half too: not just one text line on white.
    top = image.crop((0, 300, 1200, 1500))
    assert sum(1 for p in top.get_flattened_data() if p < 200) > 20_000
