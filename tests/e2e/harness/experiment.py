"""ModelExperiment manifests for the e2e stories, and reading their status back from the API server.

Queries read the router's own metrics (docs: engine contract, "Router metrics"), restricted to the
scrape job of the test's router (``job="arbiter-router-<namespace>"``, filled in by the operator from
``{{namespace}}``), so series left in the session Prometheus by earlier tests never leak in.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

GROUP, VERSION, PLURAL = "arbiter.dev", "v1alpha1", "modelexperiments"
TERMINAL = frozenset({"Promoted", "RolledBack", "Concluded", "Failed"})


def router_job(namespace: str) -> str:
    """The Prometheus job that scrapes the test's router."""
    return f"arbiter-router-{namespace}"


# Every query selects the test's router, the experiment and the variant; the operator fills them in.
SELECTOR = 'job="arbiter-router-{{namespace}}",experiment="{{experiment}}",variant="{{variant}}"'


def conversion_metric(mde: float = 0.2, name: str = "conversion") -> dict[str, Any]:
    """The primary metric: conversions posted to /feedback (success out of success+failure)."""
    return {
        "name": name,
        "type": "Proportion",
        "successes": f'sum(arbiter_router_outcomes_total{{{SELECTOR},result="success"}})',
        "trials": f'sum(arbiter_router_outcomes_total{{{SELECTOR},result=~"success|failure"}})',
        "direction": "Increase",
        "minimumDetectableEffect": mde,
    }


# Settings under which an A/A comparison stays Inconclusive for as long as an e2e story runs, for stories
# about restarts, outages and guardrails whose primary metric must not end them early. Every verdict needs
# the alpha-level confidence sequence to exclude the MDE or 0. The mixing variance is MDE^2, so a tiny MDE
# keeps the sequence's radius far above the MDE (about 0.03 still at 20,000 samples per arm), which makes
# Futile unreachable; Win or Loss needs p < alpha, which happens in at most 0.1% of runs.
UNDECIDED_MDE = 0.01
UNDECIDED_TEST: dict[str, Any] = {"method": "Sequential", "alpha": 0.001, "power": 0.8}


def latency_query(quantile: float = 0.95, window: str = "5s") -> str:
    """The router-measured latency quantile of one variant, in seconds."""
    return (
        f"histogram_quantile({quantile}, sum by (le) "
        f"(rate(arbiter_router_request_duration_seconds_bucket{{{SELECTOR}}}[{window}])))"
    )


def latency_guardrail(
    max_seconds: float = 0.25,
    *,
    quantile: float = 0.95,
    window: str = "5s",
    failure_limit: int = 1,
    critical: bool = False,
    name: str = "p95-latency",
) -> dict[str, Any]:
    """An absolute guardrail on the latency quantile."""
    return {
        "name": name,
        "query": latency_query(quantile, window),
        "max": max_seconds,
        "failureLimit": failure_limit,
        "critical": critical,
    }


def error_rate_guardrail(
    max_rate: float = 0.05, *, window: str = "5s", name: str = "error-rate"
) -> dict[str, Any]:
    """An absolute guardrail on the share of 5xx answers."""
    requests = f"arbiter_router_requests_total{{{SELECTOR}"
    return {
        "name": name,
        "query": f'sum(rate({requests},code=~"5.."}}[{window}])) / sum(rate({requests}}}[{window}]))',
        "max": max_rate,
        "critical": True,
    }


def agreement_query() -> str:
    """The share of the variant's shadow answers that agreed with the served ones (examples/shadow.yaml).

    Cumulative over the router's life: the router is the test's own, started with the experiment.
    """
    comparisons = f"arbiter_router_shadow_comparisons_total{{{SELECTOR}"
    return f'sum({comparisons},agree="true"}}) / sum({comparisons}}})'


def agreement_guardrail(
    min_share: float = 0.95, *, failure_limit: int = 2, name: str = "agreement"
) -> dict[str, Any]:
    """An absolute guardrail on the share of shadow answers that agree with the champion's."""
    return {"name": name, "query": agreement_query(), "min": min_share, "failureLimit": failure_limit}


@dataclass(frozen=True)
class VariantRef:
    """A variant as the experiment names it: its Deployment, Service and the URL the router uses."""

    name: str
    deployment: str
    service: str
    url: str

    def to_spec(self) -> dict[str, str]:
        return {"name": self.name, "deployment": self.deployment, "service": self.service, "url": self.url}


def experiment_manifest(
    name: str,
    *,
    champion: VariantRef,
    challengers: list[VariantRef],
    prometheus_url: str,
    provider: str = "Router",
    config_map: str | None = None,
    mode: str = "Canary",
    steps: list[dict[str, Any]] | None = None,
    interval: str = "1s",
    guardrails: list[dict[str, Any]] | None = None,
    primary: dict[str, Any] | None = None,
    test: dict[str, Any] | None = None,
    srm_threshold: float | None = None,
    consecutive_error_limit: int | None = None,
    decision: dict[str, Any] | None = None,
    stickiness_header: str | None = "x-user-id",
    shadow: dict[str, Any] | None = None,
    shadow_analysis: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A complete ModelExperiment (a dict ready for the API server).

    Args:
        name: metadata.name, also the router's ``experiment`` label.
        champion, challengers: the variants.
        prometheus_url: the Prometheus the operator queries.
        provider: ``Router`` (needs ``config_map``) or ``Replicas``.
        mode: Canary, ABTest or Shadow.
        steps: canary steps (weight, minDuration, minSamples).
        interval: analysis interval.
        guardrails, primary, test: the analysis blocks (see the builders above).
        srm_threshold: sampleRatioMismatch.pValueThreshold.
        consecutive_error_limit: ticks with failing queries before the experiment pauses.
        decision: the decision policy (onWin, onLoss, maxDuration, onTimeout).
        stickiness_header: the sticky key for the Router provider (None: no stickiness).
        shadow: spec.routing.shadow (mode Shadow: ``percent``, ``timeoutSeconds``).
        shadow_analysis: spec.analysis.shadow (``minDuration``, ``minSamples``, ``continueAsCanary``).
    """
    routing: dict[str, Any] = {"provider": provider}
    if provider == "Router":
        routing["router"] = {"configMap": config_map or f"{name}-routes"}
        if stickiness_header:
            routing["stickiness"] = {"header": stickiness_header}
    if shadow is not None:
        routing["shadow"] = shadow
    analysis: dict[str, Any] = {
        "interval": interval,
        "prometheus": {"url": prometheus_url, "timeout": "2s"},
        "guardrails": guardrails or [],
        "test": test or {"method": "Sequential", "alpha": 0.05, "power": 0.8},
    }
    if primary is not None:
        analysis["primary"] = primary
    if srm_threshold is not None:
        analysis["sampleRatioMismatch"] = {"pValueThreshold": srm_threshold}
    if consecutive_error_limit is not None:
        analysis["consecutiveErrorLimit"] = consecutive_error_limit
    if shadow_analysis is not None:
        analysis["shadow"] = shadow_analysis
    spec: dict[str, Any] = {
        "mode": mode,
        "champion": champion.to_spec(),
        "challengers": [c.to_spec() for c in challengers],
        "routing": routing,
        "analysis": analysis,
        "decision": {
            "onWin": "Promote",
            "onLoss": "Rollback",
            "maxDuration": "5m",
            "onTimeout": "KeepChampion",
        }
        | (decision or {}),
    }
    if steps is not None:
        spec["steps"] = steps
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ModelExperiment",
        "metadata": {"name": name},
        "spec": spec,
    }


# -- reading status -------------------------------------------------------------------------------


def get_experiment(kube_api: Any, namespace: str, name: str) -> dict[str, Any]:
    """The ModelExperiment object as stored."""
    from kubernetes import client

    api = client.CustomObjectsApi(kube_api)
    obj: Any = api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name, _request_timeout=5)
    return dict(obj)


def status_of(kube_api: Any, namespace: str, name: str) -> dict[str, Any]:
    """The experiment's status ({} before the operator wrote one)."""
    return get_experiment(kube_api, namespace, name).get("status") or {}


def condition(status: dict[str, Any], kind: str) -> dict[str, Any]:
    """The condition of type ``kind`` ({} when absent)."""
    return next((c for c in status.get("conditions") or [] if c.get("type") == kind), {})


def primary_verdicts(status: dict[str, Any]) -> dict[str, str]:
    """The primary metric's verdict per challenger, as status reports it."""
    results = ((status.get("analysis") or {}).get("primary") or {}).get("results") or []
    return {r.get("variant", "?"): r.get("verdict", "?") for r in results}


def event_reasons(kube_api: Any, namespace: str, name: str) -> list[str]:
    """Reasons of the Events about the experiment, oldest first."""
    from kubernetes import client

    events = client.CoreV1Api(kube_api).list_namespaced_event(
        namespace, field_selector=f"involvedObject.name={name}", _request_timeout=5
    )
    items = [e for e in events.items if e.involved_object.kind == "ModelExperiment"]
    items.sort(key=lambda e: str(e.first_timestamp or e.event_time or e.metadata.creation_timestamp))
    return [str(e.reason) for e in items]


def wait_for_events(
    kube_api: Any, namespace: str, name: str, *reasons: str, timeout: float = 30
) -> list[str]:
    """Wait until Events with all ``reasons`` exist for the experiment; return every reason seen.

    The operator posts Events in the background after it writes the status, so a status that shows a
    transition can be read before its Event is listed.
    """
    deadline = time.monotonic() + timeout
    while True:
        seen = event_reasons(kube_api, namespace, name)
        if set(reasons) <= set(seen):
            return seen
        if time.monotonic() > deadline:
            raise AssertionError(
                f"no Event {sorted(set(reasons) - set(seen))} within {timeout}s; seen: {seen}"
            )
        time.sleep(0.2)


_STEP = re.compile(r"step[\s/#=:-]*(\d+)", re.IGNORECASE)


def steps_in_history(history: Iterable[dict[str, Any]]) -> list[int]:
    """The steps the history passes through, in order, from the ``from``/``to`` labels (``Progressing(step 1)``).

    A step named by one entry's ``to`` and the next entry's ``from`` counts once.
    """
    out: list[int] = []
    for entry in history:
        for label in (entry.get("from"), entry.get("to")):
            match = _STEP.search(str(label or ""))
            if match and (not out or out[-1] != int(match[1])):
                out.append(int(match[1]))
    return out


def phases_in_history(history: Iterable[dict[str, Any]]) -> list[str]:
    """The phase each history entry went to (the leading word of ``to``)."""
    return [re.split(r"[\s/(]", str(entry.get("to", "")), maxsplit=1)[0] for entry in history]


def describe(status: dict[str, Any]) -> str:
    """A one-paragraph summary of a status, for failure messages."""
    decision = status.get("decision") or {}
    return (
        f"phase={status.get('phase')} step={status.get('currentStep')} weights={status.get('weights')} "
        f"pauseReason={status.get('pauseReason')} decision={decision.get('outcome')}: {decision.get('reason')} "
        f"message={status.get('message')} verdicts={primary_verdicts(status)} "
        f"conditions={[(c.get('type'), c.get('status'), c.get('reason')) for c in status.get('conditions') or []]}"
    )


def wait_for_status(
    kube_api: Any,
    namespace: str,
    name: str,
    predicate: Callable[[dict[str, Any]], bool],
    *,
    timeout: float,
    message: str,
    forbid: Callable[[dict[str, Any]], bool] | None = None,
    interval: float = 0.2,
) -> dict[str, Any]:
    """Wait until ``predicate(status)``; fail at once (showing the status) if ``forbid(status)`` holds first."""
    deadline = time.monotonic() + timeout
    last: dict[str, Any] = {}
    last_error: Exception | None = None
    while True:
        try:
            last = status_of(kube_api, namespace, name)
        except Exception as err:  # not created yet, or a transient API error: try again
            last_error = err
        else:
            if forbid is not None and forbid(last):
                raise AssertionError(f"{message}: reached a forbidden state instead: {describe(last)}")
            if predicate(last):
                return last
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"{message} (timed out after {timeout}s)\nlast status: {describe(last)}\nlast error: {last_error!r}"
            )
        time.sleep(interval)


def wait_for_phase(
    kube_api: Any,
    namespace: str,
    name: str,
    phase: str | set[str],
    *,
    timeout: float,
    forbid_phases: Iterable[str] = (),
) -> dict[str, Any]:
    """Wait until the experiment is in ``phase``; fail fast if it reaches one of ``forbid_phases``."""
    wanted = {phase} if isinstance(phase, str) else set(phase)
    forbidden = set(forbid_phases) - wanted
    return wait_for_status(
        kube_api,
        namespace,
        name,
        lambda s: s.get("phase") in wanted,
        forbid=(lambda s: s.get("phase") in forbidden) if forbidden else None,
        timeout=timeout,
        message=f"experiment {namespace}/{name} to reach phase {sorted(wanted)}",
    )


# -- recording a run ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Observed:
    """One distinct status seen while recording."""

    at: float = field(compare=False)
    """time.monotonic() when it was first seen."""
    phase: str | None
    step: int | None
    weights: dict[str, int]
    pause_reason: str | None
    verdicts: dict[str, str]
    decision: str | None
    raw: dict[str, Any] = field(repr=False, compare=False)


class StatusRecorder:
    """Poll an experiment's status in the background and keep every distinct state, in order.

    For the properties that must hold over a whole run ("never Promoted", "no Win verdict"),
    which a single final look cannot show.
    """

    def __init__(self, kube_api: Any, namespace: str, name: str, interval: float = 0.25) -> None:
        self.kube_api = kube_api
        self.namespace = namespace
        self.name = name
        self.interval = interval
        self.seen: list[Observed] = []
        self.errors = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name=f"status-{name}", daemon=True)

    def start(self) -> StatusRecorder:
        self._thread.start()
        return self

    def stop(self) -> list[Observed]:
        self._stop.set()
        self._thread.join(10)
        return self.observed()

    def observed(self) -> list[Observed]:
        with self._lock:
            return list(self.seen)

    def phases(self) -> list[str | None]:
        """Distinct phases in the order first seen."""
        out: list[str | None] = []
        for item in self.observed():
            if item.phase not in out:
                out.append(item.phase)
        return out

    def first(self, predicate: Callable[[Observed], bool]) -> Observed | None:
        return next((o for o in self.observed() if predicate(o)), None)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                status = status_of(self.kube_api, self.namespace, self.name)
            except Exception:  # not created yet, or a transient API error: counted, polled again
                self.errors += 1
            else:
                decision = (status.get("decision") or {}).get("outcome")
                item = Observed(
                    at=time.monotonic(),
                    phase=status.get("phase"),
                    step=status.get("currentStep"),
                    weights=dict(status.get("weights") or {}),
                    pause_reason=status.get("pauseReason"),
                    verdicts=primary_verdicts(status),
                    decision=decision,
                    raw=status,
                )
                with self._lock:
                    last = self.seen[-1] if self.seen else None
                    if last is None or last != item:
                        self.seen.append(item)
            self._stop.wait(self.interval)


class ValueRecorder:
    """Call ``read()`` in the background and keep each distinct result, in order (with the time first seen).

    For example the weights the router serves, or the Deployments' replica counts, while an experiment
    runs: a final look cannot show that every step was applied.
    """

    def __init__(self, read: Callable[[], Any], interval: float = 0.2) -> None:
        self.read = read
        self.interval = interval
        self.values: list[tuple[float, Any]] = []
        self.reads = 0
        self.last_error: Exception | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="value-recorder", daemon=True)

    def start(self) -> ValueRecorder:
        self._thread.start()
        return self

    def stop(self) -> list[Any]:
        self._stop.set()
        self._thread.join(10)
        return self.distinct()

    def distinct(self) -> list[Any]:
        """The distinct values in the order they were seen."""
        with self._lock:
            return [value for _, value in self.values]

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                value = self.read()
            except Exception as err:  # a transient read failure: poll again
                self.last_error = err
                value = None
            self.reads += 1
            if value is not None:
                with self._lock:
                    if not self.values or self.values[-1][1] != value:
                        self.values.append((time.monotonic(), value))
            self._stop.wait(self.interval)


def is_subsequence(wanted: list[Any], seen: list[Any]) -> bool:
    """True when ``wanted`` appears in ``seen`` in order (other values may come in between)."""
    remaining = iter(seen)
    return all(any(item == candidate for candidate in remaining) for item in wanted)
