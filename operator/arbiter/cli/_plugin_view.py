"""What `kubectl arbiter` prints: tables and the experiment view, rendered from objects as stored.

Pure functions of the object (and the time, for ages): no API calls, so they are tested on
statuses the engine wrote. Tables size every column to its widest cell, so long names never push
columns out of line.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping, Sequence
from typing import Any

from arbiter.api.status_view import leading_challenger, primary_results, samples, step_samples


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns two spaces apart, each as wide as its widest cell."""
    all_rows = [list(header), *[list(r) for r in rows]]
    widths = [max(len(r[i]) for r in all_rows) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in all_rows
    )


def number(value: Any, digits: int = 4) -> str:
    """A number with ``digits`` significant digits, or ``-`` when there is none."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return "-"
    return f"{float(value):.{digits}g}"


def signed(value: Any, digits: int = 4) -> str:
    """A number with its sign (``+0.012``), or ``-``."""
    text = number(value, digits)
    return text if text == "-" or text.startswith("-") else "+" + text


def percent(value: Any) -> str:
    """A ratio as a signed percentage (0.052 -> ``+5.2%``), or ``-``."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return "-"
    return f"{value * 100:+.1f}%"


def count(value: Any) -> str:
    """A sample count without decimals."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return "-"
    return f"{value:.0f}"


def age(since: Any, now: dt.datetime) -> str:
    """How long ago an RFC 3339 time was, like kubectl (``45s``, ``12m``, ``3h5m``, ``2d``)."""
    if not isinstance(since, str) or not since:
        return "-"
    try:
        then = dt.datetime.fromisoformat(since.replace("Z", "+00:00"))
    except ValueError:
        return "-"
    seconds = max(0, int((now - then).total_seconds()))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m"
    if seconds < 86400:
        hours, minutes = divmod(seconds // 60, 60)
        return f"{hours}h{minutes}m" if minutes else f"{hours}h"
    return f"{seconds // 86400}d"


def _variants(body: Mapping[str, Any]) -> list[str]:
    spec = body.get("spec") or {}
    names = [(spec.get("champion") or {}).get("name")] + [
        c.get("name") for c in spec.get("challengers") or []
    ]
    return [str(n) for n in names if n]


def _direction(body: Mapping[str, Any]) -> str:
    primary = ((body.get("spec") or {}).get("analysis") or {}).get("primary") or {}
    return str(primary.get("direction") or "Increase")


def weights_text(status: Mapping[str, Any]) -> str:
    """``v1=75,v2=25``."""
    return ",".join(f"{v}={w}" for v, w in (status.get("weights") or {}).items()) or "-"


def leading_of(body: Mapping[str, Any]) -> dict[str, Any]:
    """``status.leading`` as the operator wrote it, else computed from the analysis ({} when none)."""
    status = body.get("status") or {}
    leading = status.get("leading")
    if isinstance(leading, Mapping) and leading.get("variant"):
        return dict(leading)
    direction = _direction(body)
    try:
        return leading_challenger(status, direction) or {}
    except ValueError:
        return leading_challenger(status) or {}


LIST_HEADER = ["NAME", "MODE", "PHASE", "STEP", "WEIGHTS", "DECISION"]
WIDE_HEADER = [*LIST_HEADER, "LEADER", "LIFT", "P-VALUE", "DECIDE-IN", "P(WIN)", "SAMPLES", "AGE"]


def list_table(
    items: Sequence[Mapping[str, Any]], *, show_namespace: bool, wide: bool, now: dt.datetime
) -> str:
    """One line per experiment; ``wide`` adds the leading challenger's lift and p-value and the samples."""
    header = (["NAMESPACE"] if show_namespace else []) + (WIDE_HEADER if wide else LIST_HEADER)
    rows = []
    for item in items:
        meta = item.get("metadata") or {}
        status = item.get("status") or {}
        row = [
            str(meta.get("name", "")),
            mode_text(item.get("spec") or {}),
            str(status.get("phase", "-")),
            str(status.get("currentStep", "-")),
            weights_text(status),
            str((status.get("decision") or {}).get("outcome", "-")),
        ]
        if wide:
            leading = leading_of(item)
            counts = samples(status, _variants(item))
            row += [
                str(leading.get("variant", "-")),
                percent(leading.get("relativeLift")),
                number(leading.get("pValue"), 3),
                *forecast_cells(status),
                ",".join(f"{v}={count(n)}" for v, n in counts.items()) or "-",
                age(meta.get("creationTimestamp"), now),
            ]
        rows.append(([str(meta.get("namespace", ""))] if show_namespace else []) + row)
    return table(header, rows)


def mode_text(spec: Mapping[str, Any], missing: str = "") -> str:
    """The mode, marked ``(dry run)`` when the experiment never changes traffic."""
    mode = str(spec.get("mode") or missing)
    return f"{mode} (dry run)" if spec.get("dryRun") else mode


def dry_run_lines(spec: Mapping[str, Any], status: Mapping[str, Any]) -> list[str]:
    """What a dry run would have done (status.dryRun); nothing for an experiment that routes."""
    if not spec.get("dryRun"):
        return []
    record = status.get("dryRun") or {}
    would_route = ", ".join(f"{v} {w}%" for v, w in (record.get("wouldRoute") or {}).items()) or "-"
    lines = ["Dry run:    no traffic is changed; the live split above is read, never written"]
    lines.append(f"            would route {would_route}")
    if record.get("wouldHave"):
        lines.append(f"            would have {record['wouldHave']}")
    return lines


def gate_lines(status: Mapping[str, Any]) -> list[str]:
    """One line per webhook gate's last answer (status.gates)."""
    lines = []
    for entry in status.get("gates") or []:
        verdict = "passed" if entry.get("passed") else "FAILED"
        where = f", step {entry['step']}" if entry.get("step") is not None else ""
        lines.append(
            f"{entry.get('name')} ({entry.get('type')}{where}): {verdict}, {entry.get('message', '')}"
            f" [{entry.get('attempts', 1)}x]"
        )
    return [("Gates:      " if i == 0 else "            ") + line for i, line in enumerate(lines)]


def forecast_cells(status: Mapping[str, Any]) -> list[str]:
    """``status.forecast`` as the list's DECIDE-IN and P(WIN) cells."""
    forecast = status.get("forecast") or {}
    if not isinstance(forecast, Mapping):
        return ["-", "-"]
    return [str(forecast.get("decisionIn") or "-"), number(forecast.get("conditionalPower"), 2)]


def forecast_line(status: Mapping[str, Any]) -> str | None:
    """One line on when the test is expected to decide for the leading challenger (None: no forecast)."""
    forecast = status.get("forecast") or {}
    if not isinstance(forecast, Mapping) or not forecast.get("summary"):
        return None
    extra = ""
    if forecast.get("samplesTreatment") is not None and forecast.get("samplesControl") is not None:
        extra = (
            f" [{count(forecast.get('samplesTreatment'))} more {forecast.get('variant', 'challenger')} and "
            f"{count(forecast.get('samplesControl'))} more champion samples]"
        )
    return f"Forecast ({forecast.get('variant', '-')}): {forecast['summary']}{extra}"


def _threshold(guardrail: Mapping[str, Any]) -> str:
    parts = []
    for key, label in (
        ("max", "max"),
        ("min", "min"),
        ("maxIncreaseOverChampion", "+champion max"),
        ("maxDecreaseFromChampion", "-champion max"),
    ):
        if guardrail.get(key) is not None:
            parts.append(f"{label} {number(guardrail[key])}")
    return ", ".join(parts) or "-"


def experiment_view(body: Mapping[str, Any], now: dt.datetime) -> str:
    """The whole picture of one experiment: what `get NAME --watch` redraws and `status` prints.

    Phase and step, weights and samples per variant, the primary metric's lift with its confidence
    interval and p-values per challenger, secondary metrics, guardrails against their thresholds, the
    sample-ratio check and the decision with its reason.
    """
    meta = body.get("metadata") or {}
    spec = body.get("spec") or {}
    status = body.get("status") or {}
    analysis_spec = spec.get("analysis") or {}
    variants = _variants(body)
    champion = variants[0] if variants else None
    phase = str(status.get("phase") or "-")
    if status.get("pauseReason"):
        phase += f" ({status['pauseReason']})"
    steps = spec.get("steps") or []
    step = status.get("currentStep")
    step_text = "-"
    if isinstance(step, int) and steps and 0 <= step < len(steps):
        step_text = f"{step} of 0-{len(steps) - 1} ({steps[step].get('weight')}% to the challengers)"
    elif isinstance(step, int):
        step_text = str(step)
    traffic = status.get("traffic") or {}
    lines = [
        f"Name:       {meta.get('namespace', '')}/{meta.get('name', '')}",
        f"Mode:       {mode_text(spec, '-')}",
        f"Phase:      {phase}",
        f"Step:       {step_text}"
        + (f"  (step for {age(status.get('stepStartedAt'), now)})" if status.get("stepStartedAt") else "")
        + (f"  (running for {age(status.get('startedAt'), now)})" if status.get("startedAt") else ""),
        "Traffic:    "
        + (", ".join(f"{v} {w}%" for v, w in (status.get("weights") or {}).items()) or "-")
        + (f"  (data plane: {traffic.get('verified')})" if traffic.get("verified") else ""),
        *dry_run_lines(spec, status),
        *gate_lines(status),
        "",
    ]
    results = primary_results(status)
    totals = samples(status, variants)
    in_step = step_samples(status, variants)
    primary = (status.get("analysis") or {}).get("primary") or {}
    metric_name = str(primary.get("metric") or (analysis_spec.get("primary") or {}).get("name") or "primary")
    values: dict[str, Any] = {}
    for result in results:
        if champion is not None and champion not in values:
            values[champion] = result.get("controlValue")
        values[str(result["variant"])] = result.get("treatmentValue")
    intervals = {
        str(row["variant"]): f"[{number(row['ciLow'])}, {number(row['ciHigh'])}]"
        for row in primary.get("variants") or []
        if isinstance(row, Mapping) and row.get("ciLow") is not None and row.get("ciHigh") is not None
    }
    alpha = ((analysis_spec.get("test") or {}).get("alpha")) or 0.05
    rows = []
    for variant in variants:
        rows.append(
            [
                variant,
                "champion" if variant == champion else "challenger",
                f"{(status.get('weights') or {}).get(variant, '-')}%",
                count(totals.get(variant)),
                count(in_step.get(variant)),
                number(values.get(variant)),
                intervals.get(variant, "-"),
            ]
        )
    interval_header = f"{number((1 - float(alpha)) * 100, 3)}% INTERVAL"
    lines.append(
        table(["VARIANT", "ROLE", "WEIGHT", "SAMPLES", "IN STEP", metric_name.upper(), interval_header], rows)
    )

    if results:
        lines += [
            "",
            f"Primary metric {metric_name} ({primary.get('method', '-')}, "
            f"{number((1 - float(alpha)) * 100, 3)}% confidence, difference challenger - champion):",
        ]
        rows = [
            [
                str(r["variant"]),
                percent(r.get("relativeLift")),
                signed(r.get("absoluteDifference")),
                f"[{signed(r.get('ciLow'))}, {signed(r.get('ciHigh'))}]",
                number(r.get("pValue"), 3),
                number(r.get("pValueAdjusted"), 3),
                str(r.get("verdict", "-")),
            ]
            for r in results
        ]
        lines.append(
            table(["CHALLENGER", "LIFT", "DIFFERENCE", "CI", "P-VALUE", "ADJUSTED", "VERDICT"], rows)
        )
    if primary.get("error"):
        lines.append(f"  ({primary['error']})")
    forecast = forecast_line(status)
    if forecast and results:
        lines.append(forecast)
    secondary = [r for r in (status.get("analysis") or {}).get("secondary") or [] if isinstance(r, Mapping)]
    if secondary:
        lines += ["", "Secondary metrics (Holm-adjusted across metrics and challengers; they never decide):"]
        rows = [
            [
                str(r.get("metric", "-")),
                str(r.get("variant", "-")),
                percent(r.get("relativeLift")),
                f"[{signed(r.get('ciLow'))}, {signed(r.get('ciHigh'))}]",
                number(r.get("pValue"), 3),
                number(r.get("pValueFamilyAdjusted"), 3),
                str(r.get("verdict", "-")),
            ]
            for r in secondary
        ]
        lines.append(table(["METRIC", "CHALLENGER", "LIFT", "CI", "P-VALUE", "ADJUSTED", "VERDICT"], rows))

    guardrail_specs = {g.get("name"): g for g in analysis_spec.get("guardrails") or []}
    states = [g for g in status.get("guardrails") or [] if isinstance(g, Mapping)]
    if states:
        lines += ["", "Guardrails:"]
        rows = []
        for state in states:
            guardrail = guardrail_specs.get(state.get("name")) or {}
            limit = 1 if guardrail.get("critical") else guardrail.get("failureLimit", 1)
            rows.append(
                [
                    str(state.get("name", "-")),
                    str(state.get("variant", "-")),
                    number(state.get("value")),
                    number(state.get("championValue")),
                    _threshold(guardrail),
                    f"{state.get('breaches', 0)}/{limit}",
                    "BREACHED" if state.get("breached") else "ok",
                ]
            )
        lines.append(
            table(["GUARDRAIL", "VARIANT", "VALUE", "CHAMPION", "THRESHOLD", "BREACHES", "STATE"], rows)
        )

    srm = (status.get("analysis") or {}).get("srm") or {}
    if srm:
        threshold = (analysis_spec.get("sampleRatioMismatch") or {}).get("pValueThreshold", 0.001)
        observed, expected = srm.get("observed") or {}, srm.get("expected") or {}
        counts = ""
        if observed:
            counts = ", observed " + ", ".join(
                f"{v} {count(n)}" + (f" (expected {count(expected[v])})" if v in expected else "")
                for v, n in observed.items()
            )
        lines += [
            "",
            f"Sample ratio ({srm.get('method', 'ChiSquare')}): p = {number(srm.get('pValue'), 3)} "
            f"(pauses below {number(threshold)}){counts}" + ("  MISMATCH" if srm.get("mismatch") else ""),
        ]
    decision = status.get("decision") or {}
    lines += [""]
    if decision:
        lines.append(
            f"Decision:   {decision.get('outcome', '-')}"
            + (f" ({age(decision.get('time'), now)} ago)" if decision.get("time") else "")
            + f": {decision.get('reason', '')}"
        )
    elif status.get("message"):
        lines.append(f"Message:    {status['message']}")
    else:
        lines.append("Decision:   - (the operator has not looked at it yet)")
    return "\n".join(lines)


def history_and_conditions(status: Mapping[str, Any]) -> str:
    """The conditions and the transition history, oldest first."""
    lines = []
    conditions = [c for c in status.get("conditions") or [] if isinstance(c, Mapping)]
    if conditions:
        lines += ["", "Conditions:"]
        lines.append(
            table(
                ["TYPE", "STATUS", "REASON", "MESSAGE"],
                [
                    [
                        str(c.get("type")),
                        str(c.get("status")),
                        str(c.get("reason", "")),
                        str(c.get("message", "")),
                    ]
                    for c in conditions
                ],
            )
        )
    history = [h for h in status.get("history") or [] if isinstance(h, Mapping)]
    if history:
        lines += ["", "History:"]
        lines += [
            f"{h.get('time')}  {h.get('from')} -> {h.get('to')}: {h.get('reason', '')}" for h in history
        ]
    return "\n".join(lines)
