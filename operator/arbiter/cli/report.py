"""`arbiter report NAME`: one self-contained HTML file that explains an experiment and its decision.

The file is built from the experiment's status (read through ``arbiter.k8s``) and Prometheus range
queries over the experiment's lifetime of the operator's per-experiment series (docs/observability.md).
Charts are static SVG drawn by matplotlib and inlined: no JavaScript, no network needed to open the
file, and the same input gives the same bytes. When Prometheus cannot be reached or has no data, the
report is still written from the status alone and says which charts are missing.
"""

from __future__ import annotations

import argparse
import datetime as dt
import html
import io
import json
import math
import os
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # arbiter.metrics loads the Prometheus client: only when a report is written
    from arbiter.metrics.range_query import RangeSeries

#: Where Prometheus is when --prometheus-url is not given.
DEFAULT_PROMETHEUS_URL = "http://localhost:9090"
#: Seconds of context drawn before the start and after the decision.
MARGIN_SECONDS = 30.0


@dataclass(frozen=True)
class Chart:
    """One chart: its title, the sentence under it, and the queries it draws."""

    key: str
    title: str
    caption: str
    queries: dict[str, str]


def charts(namespace: str, name: str, rate_window: str = "1m") -> list[Chart]:
    """The report's charts, with the PromQL of each (the names of docs/observability.md).

    ``rate_window`` is the range of the router's ``irate()``: long enough to hold two scrapes.
    """
    sel = f'namespace="{namespace}",experiment="{name}"'
    # The router's series may or may not carry a namespace label (as in the dashboards).
    router = f'experiment="{name}",namespace=~"{namespace}|"'
    primary = f'{sel},kind="primary"'
    return [
        Chart(
            "weights",
            "Traffic weights",
            "The share of requests each variant received; dotted vertical lines are the moments the "
            "rollout moved to its next step.",
            {
                "weight": f"arbiter_experiment_variant_weight_ratio{{{sel}}}",
                "step": f"arbiter_experiment_current_step{{{sel}}}",
            },
        ),
        Chart(
            "outcome",
            "Outcome rate per variant",
            "The primary metric as the statistical test measured it for each variant (a rate or a "
            "mean over all samples so far); the lines settle as samples accumulate. The shaded band "
            "around each line is the range its true value lies in with the test's confidence at that "
            "moment, and narrows as samples accumulate. The decision is taken on the difference (next "
            "chart), which is sharper than comparing two bands by eye: bands may overlap a little while "
            "the difference is already clear.",
            {
                "value": f"arbiter_experiment_metric_value{{{primary}}}",
                "lower": f"arbiter_experiment_metric_value_ci_lower{{{primary}}}",
                "upper": f"arbiter_experiment_metric_value_ci_upper{{{primary}}}",
            },
        ),
        Chart(
            "lift",
            "Difference and its confidence sequence",
            "The line is the challenger minus the champion; the shaded band is the range the true "
            "difference lies in with the test's confidence, valid at every moment it was looked at, so "
            "the rollout may stop as soon as the band no longer contains zero (the dashed line): above "
            "zero the challenger is better, below it is worse. The solid vertical line is the decision.",
            {
                "difference": f"arbiter_experiment_metric_absolute_difference{{{primary}}}",
                "lower": f"arbiter_experiment_metric_difference_ci_lower{{{primary}}}",
                "upper": f"arbiter_experiment_metric_difference_ci_upper{{{primary}}}",
            },
        ),
        Chart(
            "pvalue",
            "p-value against alpha",
            "How surprising the observed difference would be if the challenger made no difference; the "
            "test declares a difference once this falls below alpha (the dashed line).",
            {
                "p": f"arbiter_experiment_metric_p_value{{{primary}}}",
                "alpha": f"arbiter_experiment_alpha{{{sel}}}",
            },
        ),
        Chart(
            "guardrails",
            "Guardrails against thresholds",
            "Each guardrail's reading for the challenger (solid) against its limit (dashed); crossing "
            "the limit for the allowed number of checks rolls the challenger back.",
            {
                "value": f"arbiter_experiment_guardrail_value{{{sel}}}",
                "threshold": f"arbiter_experiment_guardrail_threshold{{{sel}}}",
            },
        ),
        Chart(
            "srm",
            "Sample ratio check",
            "Whether each variant got the share of traffic it was given: a p-value below the dashed "
            "threshold means the split is broken (the data would be biased) and pauses the experiment.",
            {
                "p": f"arbiter_experiment_srm_p_value{{{sel}}}",
                "threshold": f"arbiter_experiment_srm_threshold{{{sel}}}",
            },
        ),
        Chart(
            "router",
            "Requests per second per variant (router)",
            "What the router actually sent to each variant, measured at the router: it follows the "
            "weights above when the data plane does what the operator asked.",
            {
                # irate: the last two scrapes in the window. rate() over a window longer than a short
                # run divides by the whole window and draws a ramp that never happened.
                "rate": f"sum by (variant) (irate(arbiter_router_requests_total{{{router}}}[{rate_window}]))",
            },
        ),
        Chart(
            "shadow",
            "Shadow agreement",
            "The share of mirrored requests on which the shadow model answered like the champion.",
            {"agreement": f"arbiter_experiment_shadow_agreement_ratio{{{sel}}}"},
        ),
    ]


Series = dict[str, dict[str, list["RangeSeries"]]]


def lifetime(body: Mapping[str, Any], now: float) -> tuple[float, float]:
    """The time range the report covers: from the start to the decision (or now), with a margin."""
    meta = body.get("metadata") or {}
    status = body.get("status") or {}
    start = _timestamp(status.get("startedAt")) or _timestamp(meta.get("creationTimestamp")) or now - 3600
    for entry in status.get("history") or []:
        at = _timestamp(entry.get("time")) if isinstance(entry, Mapping) else None
        if at is not None:
            start = min(start, at)
    end = now
    if status.get("phase") in ("Promoted", "RolledBack", "Concluded", "Failed"):
        decided = _timestamp((status.get("decision") or {}).get("time"))
        if decided is not None:
            end = min(now, decided + MARGIN_SECONDS)
    return start - MARGIN_SECONDS, max(end, start + 1)


def collect_series(
    prometheus_url: str, namespace: str, name: str, start: float, end: float
) -> tuple[Series, str | None]:
    """Every chart's range queries; the second value says why Prometheus could not answer (or None)."""
    from arbiter.metrics.range_query import RangeQueryError, range_query, step_for

    step = step_for(start, end)
    window = f"{max(60, round(4 * step))}s"
    found: Series = {}
    for chart in charts(namespace, name, window):
        found[chart.key] = {}
        for key, query in chart.queries.items():
            try:
                found[chart.key][key] = range_query(prometheus_url, query, start, end, step)
            except RangeQueryError as exc:
                return found, str(exc)
    return found, None


def _timestamp(value: Any) -> float | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _has_data(series: Mapping[str, Sequence[RangeSeries]], key: str) -> bool:
    return any(s.points for s in series.get(key) or [])


def plain_decision(body: Mapping[str, Any]) -> str:
    """The decision in plain words, for someone who has never read the spec."""
    spec = body.get("spec") or {}
    status = body.get("status") or {}
    phase = status.get("phase") or "Pending"
    champion = (spec.get("champion") or {}).get("name", "the champion")
    decision = status.get("decision") or {}
    winner = decision.get("variant") or (status.get("leading") or {}).get("variant")
    words = {
        "Promoted": f"The challenger {winner or ''} was promoted: it now serves all traffic.".replace(
            "  ", " "
        ),
        "RolledBack": f"The challenger was rolled back: the champion {champion} serves all traffic again.",
        "Concluded": f"The experiment concluded without a better challenger: the champion {champion} was kept.",
        "Failed": "The experiment could not run: its spec was rejected.",
        "Paused": "The experiment is paused; traffic stays where it is until it is resumed.",
        "Progressing": "The experiment is still running; no decision yet.",
        "Pending": "The experiment has not started yet.",
    }
    return words.get(str(phase), f"The experiment is {phase}.")


def time_unit(span: float) -> tuple[float, str]:
    """Seconds per unit of the time axis and its name: seconds for a short run, hours for a long one."""
    if span <= 300:
        return 1.0, "seconds"
    if span <= 5 * 3600:
        return 60.0, "minutes"
    return 3600.0, "hours"


#: Matplotlib's default colours, given to variants in order (the champion first) so that one variant
#: has one colour in every chart.
_COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]


def _palette(variants: Sequence[str]) -> dict[str, str]:
    return {v: _COLOURS[i % len(_COLOURS)] for i, v in enumerate(variants)}


def _svg(figure: Any) -> str:
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", metadata={"Date": None}, bbox_inches="tight")
    text = buffer.getvalue()
    return text[text.index("<svg") :]


def _label(series: RangeSeries, *keys: str) -> str:
    return " ".join(series.labels.get(k, "") for k in keys if series.labels.get(k)) or "value"


def render_chart(
    chart: Chart, data: Mapping[str, Sequence[RangeSeries]], marks: Mapping[str, Any]
) -> str | None:
    """One chart as inline SVG, or None when its series have no points."""
    main = next(iter(chart.queries))
    if not _has_data(data, main):
        return None
    import matplotlib

    matplotlib.use("Agg")
    matplotlib.rcParams["svg.hashsalt"] = "arbiter-report"
    # Text stays text (searchable, selectable, a tenth of the size); the page's fonts draw it.
    matplotlib.rcParams["svg.fonttype"] = "none"
    import matplotlib.pyplot as plt

    origin = float(marks["origin"])
    unit_seconds, unit_name = time_unit(marks.get("span", 3600.0))
    palette = _palette(marks.get("variants") or [])

    def x(at: float) -> float:
        return (at - origin) / unit_seconds

    def xs(series: RangeSeries) -> list[float]:
        return [x(t) for t, _ in series.points]

    def color(series: RangeSeries) -> str | None:
        return palette.get(series.labels.get("variant", ""))

    def ys(series: RangeSeries) -> list[float]:
        return [v for _, v in series.points]

    figure, axes = plt.subplots(figsize=(9, 3.2), dpi=100)

    def band(variant: str | None, fill: Any, label: str) -> None:
        """Shade between the chart's ``lower`` and ``upper`` series of ``variant`` (where both have points)."""
        low = next((b for b in data.get("lower") or [] if b.labels.get("variant") == variant), None)
        high = next((b for b in data.get("upper") or [] if b.labels.get("variant") == variant), None)
        if low is None or high is None:
            return
        highs = dict(high.points)
        both = [(t, v, highs[t]) for t, v in low.points if t in highs]
        axes.fill_between(
            [x(t) for t, _, _ in both],
            [lo for _, lo, _ in both],
            [hi for _, _, hi in both],
            color=fill,
            alpha=0.2,
            label=label,
        )

    try:
        if chart.key == "weights":
            for s in data["weight"]:
                axes.step(
                    xs(s), [v * 100 for v in ys(s)], where="post", label=_label(s, "variant"), color=color(s)
                )
            axes.set_ylabel("% of traffic")
            axes.set_ylim(-5, 105)
            for step_series in data.get("step") or []:
                previous = None
                for t, v in step_series.points:
                    if previous is not None and v != previous:
                        axes.axvline(
                            x(t),
                            color="#555555",
                            linestyle=":",
                            linewidth=1.5,
                            label="step change",
                        )
                    previous = v
        elif chart.key == "outcome":
            for s in data["value"]:
                variant = s.labels.get("variant")
                (line,) = axes.plot(xs(s), ys(s), label=_label(s, "variant"), color=color(s))
                band(variant, line.get_color(), f"{variant} interval")
            axes.set_ylabel(next(iter(data["value"])).labels.get("metric", "value"))
        elif chart.key == "lift":
            for s in data["difference"]:
                variant = s.labels.get("variant")
                (line,) = axes.plot(xs(s), ys(s), label=f"{variant} minus champion", color=color(s))
                band(variant, line.get_color(), f"{variant} confidence sequence")
            axes.axhline(0, color="black", linestyle="--", linewidth=1)
            axes.set_ylabel("difference")
        elif chart.key == "pvalue":
            for s in data["p"]:
                axes.plot(
                    xs(s),
                    [max(v, 1e-12) for v in ys(s)],
                    label=f"p-value {_label(s, 'variant')}",
                    color=color(s),
                )
            alphas = [v for s in data.get("alpha") or [] for v in ys(s)]
            if alphas:
                axes.axhline(alphas[-1], color="red", linestyle="--", label=f"alpha {alphas[-1]:g}")
            axes.set_yscale("log")
        elif chart.key == "guardrails":
            for s in data["value"]:
                (line,) = axes.plot(xs(s), ys(s), label=_label(s, "guardrail", "variant"), color=color(s))
                for bound in data.get("threshold") or []:
                    if bound.labels.get("guardrail") == s.labels.get("guardrail") and bound.points:
                        axes.plot(
                            xs(bound),
                            ys(bound),
                            linestyle="--",
                            color=line.get_color(),
                            label=f"{_label(bound, 'guardrail')} {bound.labels.get('bound', 'limit')}",
                        )
        elif chart.key == "srm":
            for s in data["p"]:
                axes.plot(xs(s), [max(v, 1e-12) for v in ys(s)], label="sample-ratio p-value")
            thresholds = [v for s in data.get("threshold") or [] for v in ys(s)]
            if thresholds:
                axes.axhline(
                    thresholds[-1], color="red", linestyle="--", label=f"threshold {thresholds[-1]:g}"
                )
            axes.set_yscale("log")
        elif chart.key == "router":
            for s in data["rate"]:
                axes.plot(xs(s), ys(s), label=_label(s, "variant"), color=color(s))
            axes.set_ylabel("requests per second")
        elif chart.key == "shadow":
            for s in data["agreement"]:
                axes.plot(xs(s), [v * 100 for v in ys(s)], label=_label(s, "variant"), color=color(s))
            axes.set_ylabel("% agreeing")
        decided = marks.get("decision")
        if decided is not None:
            axes.axvline(x(float(decided)), color="black", linewidth=1.5, label="decision")
        axes.set_xlabel(f"{unit_name} since the start")
        axes.grid(True, alpha=0.3)
        handles, labels = axes.get_legend_handles_labels()
        unique = dict(zip(labels, handles, strict=False))
        if unique:
            axes.legend(
                unique.values(), unique.keys(), loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8
            )
        return _svg(figure)
    finally:
        plt.close(figure)


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;color:#222;background:#fff}
h1{font-size:1.6em;margin-bottom:.2em} h2{font-size:1.2em;margin-top:2em;border-bottom:1px solid #ddd}
.decision{font-size:1.15em;padding:.8em 1em;border-radius:6px;background:#f3f3f3}
.Promoted{background:#e3f5e1}.RolledBack{background:#fbe3e1}.Concluded{background:#eef}
.caption{color:#444;font-size:.95em;max-width:60em}
.missing{color:#8a5300;background:#fff6e0;padding:.5em 1em;border-radius:4px}
table{border-collapse:collapse;font-size:.9em} td,th{border:1px solid #ccc;padding:.3em .6em;text-align:left}
svg{max-width:100%;height:auto} #history td:first-child{white-space:nowrap}
"""


def build_html(
    body: Mapping[str, Any],
    series: Series,
    *,
    generated_at: float,
    prometheus_problem: str | None = None,
) -> str:
    """The whole report as one HTML document (inline CSS and SVG, no scripts, no external references).

    Args:
        body: the ModelExperiment as read from the API server.
        series: per chart key, per query key, the range series (empty when Prometheus had none).
        generated_at: Unix seconds written into the footer.
        prometheus_problem: why Prometheus could not be asked, shown above the charts.
    """
    meta = body.get("metadata") or {}
    spec = body.get("spec") or {}
    status = body.get("status") or {}
    namespace, name = str(meta.get("namespace", "")), str(meta.get("name", ""))
    decision = status.get("decision") or {}
    esc = html.escape
    start, end = lifetime(body, generated_at)
    variants = _variant_names(body)
    marks: dict[str, Any] = {
        "origin": start + MARGIN_SECONDS,
        "decision": None,
        "span": end - start,
        "variants": variants,
    }
    if status.get("phase") in ("Promoted", "RolledBack", "Concluded"):
        marks["decision"] = _timestamp(decision.get("time"))
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>Arbiter report: {esc(namespace)}/{esc(name)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>{esc(namespace)}/{esc(name)}</h1>",
        f"<p>{esc(str(spec.get('mode', '')))} experiment; champion "
        f"{esc(str((spec.get('champion') or {}).get('name', '-')))}, challengers "
        f"{esc(', '.join(str(c.get('name')) for c in spec.get('challengers') or []))}.</p>",
        f'<div class="decision {esc(str(status.get("phase", "")))}" id="decision">'
        f"<strong>{esc(str(status.get('phase', 'Pending')))}</strong>"
        + (f" ({esc(str(decision.get('outcome')))})" if decision.get("outcome") else "")
        + f". {esc(plain_decision(body))}"
        + (f"<br>Why: {esc(str(decision.get('reason')))}" if decision.get("reason") else "")
        + "</div>",
        _summary_table(body),
    ]
    missing = []
    if prometheus_problem:
        parts.append(
            f'<p class="missing">Prometheus could not be asked ({esc(prometheus_problem)}): the charts '
            "below are missing; the numbers above come from the experiment's status.</p>"
        )
    is_shadow = spec.get("mode") == "Shadow"
    for chart in charts(namespace, name):
        data = series.get(chart.key) or {}
        if chart.key == "shadow" and not is_shadow and not _has_data(data, "agreement"):
            continue
        svg = render_chart(chart, data, marks) if data else None
        parts.append(f'<section class="chart" id="chart-{chart.key}"><h2>{esc(chart.title)}</h2>')
        if svg is None:
            missing.append(chart.title)
            parts.append('<p class="missing">No data from Prometheus for this chart.</p>')
        else:
            parts.append(svg)
        parts.append(f'<p class="caption">{esc(chart.caption)}</p></section>')
    parts.append(_history_table(status))
    when = dt.datetime.fromtimestamp(generated_at, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    parts.append(f'<p class="caption">Generated by arbiter report at {when}.</p>')
    if missing:
        parts.append(f"<!-- missing charts: {esc(', '.join(missing))} -->")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def missing_charts(document: str) -> list[str]:
    """The titles of the charts a report had no data for (read back from its closing comment)."""
    marker = "<!-- missing charts: "
    if marker not in document:
        return []
    text = document.split(marker, 1)[1].split(" -->", 1)[0]
    return [html.unescape(t) for t in text.split(", ")]


def _fmt(value: Any, digits: int = 4) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return "-" if value is None else str(value)
    return f"{value:.{digits}g}"


def _count(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return "-"
    return f"{value:,.0f}"


def _summary_table(body: Mapping[str, Any]) -> str:
    status = body.get("status") or {}
    esc = html.escape
    rows = []
    for result in (status.get("analysis") or {}).get("primary", {}).get("results") or []:
        if not isinstance(result, Mapping):
            continue
        lift = result.get("relativeLift")
        rows.append(
            "<tr>"
            + "".join(
                f"<td>{esc(c)}</td>"
                for c in (
                    str(result.get("variant", "-")),
                    _fmt(result.get("controlValue")),
                    _fmt(result.get("treatmentValue")),
                    f"{lift * 100:+.2f}%" if isinstance(lift, int | float) else "-",
                    f"[{_fmt(result.get('ciLow'))}, {_fmt(result.get('ciHigh'))}]",
                    _fmt(result.get("pValue"), 3),
                    str(result.get("verdict", "-")),
                    f"{_count(result.get('nControl'))} / {_count(result.get('nTreatment'))}",
                )
            )
            + "</tr>"
        )
    weights = ", ".join(f"{esc(str(v))} {esc(str(w))}%" for v, w in (status.get("weights") or {}).items())
    head = (
        "<tr><th>challenger</th><th>champion value</th><th>challenger value</th><th>lift</th>"
        "<th>confidence interval of the difference</th><th>p-value</th><th>verdict</th>"
        "<th>samples (champion / challenger)</th></tr>"
    )
    table = (
        f'<table id="results">{head}{"".join(rows)}</table>' if rows else "<p>No test results in status.</p>"
    )
    return (
        "<h2>Result</h2><p>The last analysis the operator recorded in status. Traffic now: "
        f"{weights or '-'}</p>{table}"
    )


def _history_table(status: Mapping[str, Any]) -> str:
    esc = html.escape
    rows = [
        f"<tr><td>{esc(str(h.get('time', '')))}</td><td>{esc(str(h.get('from', '')))}</td>"
        f"<td>{esc(str(h.get('to', '')))}</td><td>{esc(str(h.get('reason', '')))}</td></tr>"
        for h in status.get("history") or []
        if isinstance(h, Mapping)
    ]
    if not rows:
        return '<section id="history"><h2>History</h2><p>No transitions recorded.</p></section>'
    return (
        '<section id="history"><h2>History</h2><table><tr><th>time</th><th>from</th><th>to</th>'
        f"<th>reason</th></tr>{''.join(rows)}</table></section>"
    )


def write_report(
    body: Mapping[str, Any], output: Path, prometheus_url: str | None, *, now: float | None = None
) -> list[str]:
    """Query Prometheus, write the report to ``output`` and return the titles of the missing charts.

    A Prometheus that cannot be asked is one warning line on stderr; the report is written anyway.
    """
    now = time.time() if now is None else now
    meta = body.get("metadata") or {}
    problem: str | None = None
    series: Series = {}
    if prometheus_url:
        start, end = lifetime(body, now)
        series, problem = collect_series(
            prometheus_url, str(meta.get("namespace")), str(meta.get("name")), start, end
        )
    else:
        problem = "no --prometheus-url"
    document = build_html(body, series, generated_at=now, prometheus_problem=problem)
    output.write_text(document, encoding="utf-8")
    missing = missing_charts(document)
    if problem:
        sys.stderr.write(f"warning: {problem}; the report has the status only\n")
    elif missing:
        sys.stderr.write(f"warning: no data in Prometheus for: {', '.join(missing)}\n")
    return missing


def write_demo_artifacts(
    body: Mapping[str, Any],
    directory: Path,
    prometheus_url: str | None,
    *,
    scenario: str,
    rollback_seconds: float | None = None,
    take_screenshot: bool = True,
) -> dict[str, Path]:
    """What `make demo` leaves behind: report.html, report.png (when Chromium is installed), result.json.

    ``steps_completed`` counts the steps the rollout went through: the current step's index, plus the
    last one when it was promoted (a rollback at the first step completed none). ``rollback_seconds``,
    unless given, is for a rolled-back experiment the time the challenger served at its last step
    before the rollback (from that step's start to the decision); None otherwise.
    """
    directory.mkdir(parents=True, exist_ok=True)
    report = directory / "report.html"
    write_report(body, report, prometheus_url)
    paths = {"report": report}
    png = directory / "report.png"
    if take_screenshot and screenshot(report, png):
        paths["screenshot"] = png
    from arbiter.api.status_view import samples

    status = body.get("status") or {}
    decision = status.get("decision") or {}
    started = _timestamp(status.get("startedAt"))
    decided = _timestamp(decision.get("time"))
    result = {
        "scenario": scenario,
        "phase": status.get("phase"),
        "decision": decision.get("outcome"),
        "reason": decision.get("reason"),
        "steps_completed": _steps_completed(status),
        "duration_seconds": round(decided - started, 1) if started and decided else None,
        "rollback_seconds": rollback_seconds
        if rollback_seconds is not None
        else _rollback_seconds(status, decided),
        "samples": samples(status, _variant_names(body)),
    }
    paths["result"] = directory / "result.json"
    paths["result"].write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return paths


def _rollback_seconds(status: Mapping[str, Any], decided: float | None) -> float | None:
    step_started = _timestamp(status.get("stepStartedAt"))
    if status.get("phase") != "RolledBack" or step_started is None or decided is None:
        return None
    return round(decided - step_started, 1)


def _steps_completed(status: Mapping[str, Any]) -> int | None:
    step = status.get("currentStep")
    if not isinstance(step, int):
        return None
    return step + 1 if status.get("phase") == "Promoted" else step


def _variant_names(body: Mapping[str, Any]) -> list[str]:
    spec = body.get("spec") or {}
    names = [str((spec.get("champion") or {}).get("name", ""))]
    return names + [str(c.get("name")) for c in spec.get("challengers") or []]


def chromium() -> str | None:
    """The Chromium executable, if installed."""
    import shutil

    for candidate in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(candidate)
        if found:
            return found
    return None


def screenshot(page: Path, png: Path, *, height: int = 4200, timeout: float = 120.0) -> bool:
    """Screenshot ``page`` with headless Chromium; False when Chromium is not installed."""
    import subprocess

    browser = chromium()
    if browser is None:
        return False
    subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            f"--screenshot={png}",
            f"--window-size=1200,{height}",
            page.resolve().as_uri(),
        ],
        check=True,
        capture_output=True,
        timeout=timeout,
    )
    return png.exists()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The report's own options (the plugin adds its connection options itself)."""
    parser.add_argument("name", help="the ModelExperiment")
    parser.add_argument("-o", "--output", default=None, help="the HTML file (default NAME-report.html)")
    parser.add_argument(
        "--prometheus-url",
        default=os.environ.get("ARBITER_PROMETHEUS_URL", DEFAULT_PROMETHEUS_URL),
        help="the Prometheus that scrapes the operator (default $ARBITER_PROMETHEUS_URL or "
        f"{DEFAULT_PROMETHEUS_URL})",
    )


def run(args: argparse.Namespace, namespace: str) -> int:
    """Read the experiment and write its report; prints the file's path."""
    from arbiter.k8s import experiments

    body = experiments.get_experiment(namespace, args.name)
    if body is None:
        raise LookupError(f"modelexperiment {namespace}/{args.name} not found")
    output = Path(args.output or f"{args.name}-report.html")
    write_report(body, output, args.prometheus_url)
    print(f"wrote {output}")
    return 0


def register(subparsers: Any) -> None:
    """Add `arbiter report`."""
    parser = subparsers.add_parser("report", help="write an HTML report of one experiment")
    add_arguments(parser)
    parser.add_argument("-n", "--namespace", default=None, help="the namespace (default: the context's)")
    parser.add_argument("--kubeconfig", default=None, help="path to the kubeconfig file")
    parser.add_argument("--context", default=None, help="the kubeconfig context to use")
    parser.set_defaults(func=_command)


def _command(args: argparse.Namespace) -> int:
    try:
        from arbiter.k8s import config, experiments

        config.configure(args.kubeconfig, args.context)
        return run(args, args.namespace or experiments.current_namespace())
    except Exception as exc:
        from arbiter.k8s.config import describe_error

        message = describe_error(exc) or (str(exc).splitlines() or [type(exc).__name__])[0]
        sys.stderr.write(f"error: {message}\n")
        return 3
