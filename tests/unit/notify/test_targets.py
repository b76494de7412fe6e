"""Which receivers an experiment's transition goes to: the operator's, the experiment's, each once."""

from __future__ import annotations

from typing import Any

from arbiter.api.v1alpha1 import NotificationReceiverType
from arbiter.notify.config import parse_config
from arbiter.notify.sender import Notifier
from arbiter.notify.transitions import Kind, Severity

CONFIG = parse_config(
    {
        "receivers": [
            {"name": "pager", "type": "Alertmanager", "url": "http://am:9093", "minSeverity": "Critical"},
            {"name": "team", "type": "Slack", "url": "http://slack", "allExperiments": False},
            {"name": "audit", "type": "Webhook", "url": "http://audit", "events": ["Promoted"]},
        ]
    }
)


def test_receivers_for_all_experiments_use_their_own_filter() -> None:
    targets, problems = Notifier(CONFIG).targets_for("ml", {})
    assert problems == [] and [t.label for t in targets] == ["pager", "audit"]
    pager, audit = targets
    assert pager.wants(Kind.ROLLED_BACK, Severity.CRITICAL) and not pager.wants(Kind.PROMOTED, Severity.INFO)
    assert audit.wants(Kind.PROMOTED, Severity.INFO) and not audit.wants(Kind.ROLLED_BACK, Severity.CRITICAL)


def test_an_experiment_adds_a_named_receiver_and_its_own_with_its_filter() -> None:
    spec = {
        "notifications": {
            "receivers": [
                {"name": "team"},
                {"name": "mine", "type": "Webhook", "urlSecretRef": {"name": "hooks", "key": "url"}},
            ],
            "minSeverity": "Warning",
        }
    }
    targets, problems = Notifier(CONFIG).targets_for("ml", spec)
    assert problems == []
    by_label = {t.label: t for t in targets}
    assert set(by_label) == {"pager", "team", "audit", "ml/mine"}
    assert by_label["ml/mine"].secret == ("ml", "hooks", "url")
    assert by_label["ml/mine"].type is NotificationReceiverType.WEBHOOK
    for label in ("team", "ml/mine"):
        assert by_label[label].wants(Kind.PAUSED, Severity.WARNING)
        assert not by_label[label].wants(Kind.ADVANCED, Severity.INFO)


def test_a_listed_receiver_keeps_its_own_minimum_too() -> None:
    spec = {"notifications": {"receivers": [{"name": "pager"}], "minSeverity": "Info"}}
    (pager, _audit), _ = Notifier(CONFIG).targets_for("ml", spec)
    assert not pager.wants(Kind.STARTED, Severity.INFO), "the pager's Critical minimum still holds"


def test_an_unknown_receiver_is_a_problem_named_for_the_owner() -> None:
    _, problems = Notifier(CONFIG).targets_for("ml", {"notifications": {"receivers": [{"name": "nobody"}]}})
    assert len(problems) == 1 and "no receiver named 'nobody'" in problems[0]


def test_an_invalid_spec_notifications_still_tells_the_operators_receivers() -> None:
    import asyncio

    async def run() -> tuple[list[str], list[str]]:
        sender = Notifier(CONFIG)
        experiment = {
            "metadata": {"namespace": "ml", "name": "x"},
            "spec": {"notifications": {"minSeverity": "Loud"}},
        }
        notices, problems = sender.notify(experiment, {"phase": "Progressing"}, {"phase": "RolledBack"})
        queued = [label for label in ("pager", "audit", "team") if sender.queued(label)]
        for lane in sender._lanes.values():  # nothing listens: stop the workers before they send
            if lane.worker is not None:
                lane.worker.cancel()
        await sender.close(timeout=0)
        assert [n.kind.value for n in notices] == ["RolledBack"]
        return queued, problems

    queued, problems = asyncio.run(run())
    assert queued == ["pager"], "the pager (Critical) takes a RolledBack; audit only Promoted"
    assert problems == ["spec.notifications is invalid: only the operator's receivers were told"]


def test_a_dry_runs_rollback_pages_nobody_and_says_nothing_was_done() -> None:
    import asyncio

    async def run() -> tuple[list[str], list[Any]]:
        sender = Notifier(CONFIG)
        experiment = {"metadata": {"namespace": "ml", "name": "x"}, "spec": {"dryRun": True}}
        before = {"phase": "Progressing"}
        after = {"phase": "RolledBack", "decision": {"outcome": "Rollback", "reason": "latency breached"}}
        notices, _ = sender.notify(experiment, before, after)
        queued = [label for label in ("pager", "audit", "team") if sender.queued(label)]
        for lane in sender._lanes.values():
            if lane.worker is not None:
                lane.worker.cancel()
        await sender.close(timeout=0)
        return queued, notices

    queued, notices = asyncio.run(run())
    (notice,) = notices
    assert notice.kind is Kind.ROLLED_BACK and notice.severity is Severity.INFO
    assert notice.reason.startswith("dry run, no traffic changed: ")
    assert queued == [], "the pager wants Critical only; a dry run is Info"
