"""Notifications delivered to real receivers: local HTTP servers and Debian's Alertmanager.

The :class:`~arbiter.notify.Notifier` runs on the test's event loop as it runs on Kopf's; each test
hands it the before/after status of a write, as the experiment loop does, and checks what arrives.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client import REGISTRY

from arbiter.notify import Notifier, parse_config
from notify_support import Alertmanager, HttpReceiver, closed_port_url

pytestmark = pytest.mark.timeout(120)

EXPERIMENT = {
    "metadata": {"namespace": "ml", "name": "fraud-v2", "uid": "u-1"},
    "spec": {"mode": "Canary"},
}
PROGRESSING = {"phase": "Progressing", "currentStep": 0, "weights": {"v1": 95, "v2": 5}, "message": "step 0"}
ADVANCED = {**PROGRESSING, "currentStep": 1, "weights": {"v1": 75, "v2": 25}, "message": "step 0 passed"}
METRICS_DOWN = {**ADVANCED, "phase": "Paused", "pauseReason": "MetricsUnavailable", "message": "no metrics"}
ROLLED_BACK = {
    "phase": "RolledBack",
    "currentStep": 1,
    "weights": {"v1": 100, "v2": 0},
    "message": "v2 loses on conversion: lift -12.0%, p=0.0031",
    "decision": {"outcome": "Rollback", "reason": "v2 loses on conversion: lift -12.0%, p=0.0031"},
    "leading": {"variant": "v2", "relativeLift": -0.12, "pValue": 0.0031},
}
FAST = {"attempts": 3, "initialBackoff": "50ms", "maxBackoff": "200ms", "timeout": "2s"}


def notifier(receivers: list[dict[str, Any]], **delivery: Any) -> Notifier:
    config = parse_config(
        {"clusterName": "prod-eu", "receivers": receivers, "delivery": {**FAST, **delivery}}
    )
    return Notifier(config)


def counter(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def until(predicate: Any, timeout: float = 20.0) -> None:
    """Wait on the event loop (the workers run on it) until ``predicate()`` holds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


@pytest.fixture
def receiver() -> Iterator[HttpReceiver]:
    server = HttpReceiver()
    yield server
    server.close()


@pytest.fixture(scope="module")
def alertmanager(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Alertmanager]:
    server = Alertmanager(tmp_path_factory.mktemp("alertmanager")).start()
    yield server
    server.stop()


async def test_a_webhook_gets_each_transition_once_in_order_with_its_numbers(receiver: HttpReceiver) -> None:
    sender = notifier([{"name": "hook", "type": "Webhook", "url": receiver.url + "/arbiter"}])
    writes = [({}, PROGRESSING), (PROGRESSING, ADVANCED), (ADVANCED, ADVANCED), (ADVANCED, ROLLED_BACK)]
    for before, after in writes:
        sender.notify(EXPERIMENT, before, after)
    await until(lambda: len(receiver.requests) == 3)
    await sender.close()
    assert [r.path for r in receiver.requests] == ["/arbiter"] * 3
    assert receiver.requests[0].headers["Content-Type"] == "application/json"
    assert receiver.requests[0].headers["User-Agent"].startswith("arbiter/")
    started, advanced, rolled_back = receiver.bodies()
    assert [started["event"], advanced["event"], rolled_back["event"]] == [
        "Started",
        "Advanced",
        "RolledBack",
    ]
    assert {b["cluster"] for b in receiver.bodies()} == {"prod-eu"}
    assert advanced["numbers"]["step"] == 1 and advanced["numbers"]["weights"] == {"v1": 75, "v2": 25}
    assert rolled_back["severity"] == "Critical"
    assert rolled_back["numbers"]["leading"] == {"variant": "v2", "relativeLift": -0.12, "pValue": 0.0031}
    assert rolled_back["transition"]["reason"] == "v2 loses on conversion: lift -12.0%, p=0.0031"
    assert rolled_back["experiment"]["name"] == "fraud-v2"


async def test_slack_gets_text_and_blocks_and_only_what_passes_its_minimum(receiver: HttpReceiver) -> None:
    sender = notifier([{"name": "team", "type": "Slack", "url": receiver.url, "minSeverity": "Warning"}])
    for before, after in [({}, PROGRESSING), (PROGRESSING, METRICS_DOWN), (METRICS_DOWN, ROLLED_BACK)]:
        sender.notify(EXPERIMENT, before, after)
    await until(lambda: len(receiver.requests) == 2)
    await sender.close()
    texts = [b["text"] for b in receiver.bodies()]
    assert texts == [
        "[prod-eu] ml/fraud-v2 MetricsUnavailable: no metrics",
        "[prod-eu] ml/fraud-v2 RolledBack: v2 loses on conversion: lift -12.0%, p=0.0031",
    ]
    blocks = receiver.bodies()[1]["blocks"]
    assert blocks[0]["text"]["text"].startswith(":rotating_light: [prod-eu]")


async def test_a_failing_receiver_is_retried_with_backoff_until_it_answers() -> None:
    flaky = HttpReceiver(responses=[503, 429])
    try:
        sender = notifier([{"name": "flaky", "type": "Webhook", "url": flaky.url}])
        retries = counter("arbiter_notification_retries_total", receiver="flaky")
        sent = counter("arbiter_notifications_sent_total", receiver="flaky", event="Started")
        sender.notify(EXPERIMENT, {}, PROGRESSING)
        await until(lambda: len(flaky.requests) == 1)
        await sender.close()
        assert flaky.attempts == 3
        assert counter("arbiter_notification_retries_total", receiver="flaky") == retries + 2
        assert counter("arbiter_notifications_sent_total", receiver="flaky", event="Started") == sent + 1
    finally:
        flaky.close()


async def test_a_receiver_that_is_down_is_given_up_on_without_holding_back_the_others(
    receiver: HttpReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    secret_path = "/services/T000/B000/XXXXSECRETXXXX"
    down = closed_port_url() + secret_path
    sender = notifier(
        [
            {"name": "down", "type": "Slack", "url": down},
            {"name": "up", "type": "Webhook", "url": receiver.url},
        ],
        attempts=4,
        initialBackoff="300ms",
        maxBackoff="1s",
    )
    failed = counter("arbiter_notifications_failed_total", receiver="down", event="Started")
    caplog.set_level(logging.INFO, logger="arbiter.notify")
    notices, _ = sender.notify(EXPERIMENT, {}, PROGRESSING)
    # notify() only queued: nothing was sent or attempted before it returned.
    assert [n.kind.value for n in notices] == ["Started"]
    assert sender.queued("down") == 1 and sender.queued("up") == 1 and receiver.attempts == 0
    # The working receiver gets its notification while the dead one is still being retried.
    await until(lambda: len(receiver.requests) == 1)
    assert counter("arbiter_notifications_failed_total", receiver="down", event="Started") == failed
    await until(
        lambda: counter("arbiter_notifications_failed_total", receiver="down", event="Started") == failed + 1
    )
    await sender.close()
    assert "gave up sending Started of ml/fraud-v2 to receiver down after 4 attempt(s)" in caplog.text
    assert secret_path not in caplog.text and "XXXXSECRETXXXX" not in caplog.text


async def test_a_refusal_is_not_retried(receiver: HttpReceiver) -> None:
    refusing = HttpReceiver(responses=[400])
    try:
        sender = notifier([{"name": "refusing", "type": "Webhook", "url": refusing.url}])
        failed = counter("arbiter_notifications_failed_total", receiver="refusing", event="Started")
        sender.notify(EXPERIMENT, {}, PROGRESSING)
        await until(
            lambda: (
                counter("arbiter_notifications_failed_total", receiver="refusing", event="Started")
                == failed + 1
            )
        )
        await sender.close()
        assert refusing.attempts == 1
    finally:
        refusing.close()


async def test_a_full_queue_drops_the_oldest_and_counts_it(receiver: HttpReceiver) -> None:
    sender = notifier([{"name": "small", "type": "Webhook", "url": receiver.url}], queueSize=2)
    dropped = counter("arbiter_notifications_dropped_total", receiver="small")
    steps = [{**PROGRESSING, "currentStep": i, "message": f"step {i}"} for i in range(6)]
    # Five transitions queued before the worker runs once: the first three make room for the last two.
    for before, after in itertools.pairwise(steps):
        sender.notify(EXPERIMENT, before, after)
    assert counter("arbiter_notifications_dropped_total", receiver="small") == dropped + 3
    await until(lambda: len(receiver.requests) == 2)
    await sender.close()
    assert [b["numbers"]["step"] for b in receiver.bodies()] == [4, 5]


async def test_an_experiments_own_receiver_reads_its_url_from_a_secret(receiver: HttpReceiver) -> None:
    reads: list[tuple[str, str, str]] = []

    def read_secret(namespace: str, name: str, key: str) -> bytes:
        reads.append((namespace, name, key))
        return (receiver.url + "/from-secret\n").encode()

    sender = Notifier(parse_config({"delivery": FAST}), secret_reader=read_secret)
    experiment = {
        **EXPERIMENT,
        "spec": {
            "notifications": {
                "receivers": [
                    {"name": "mine", "type": "Webhook", "urlSecretRef": {"name": "hooks", "key": "url"}}
                ],
                "events": ["RolledBack"],
            }
        },
    }
    sender.notify(experiment, {}, PROGRESSING)
    sender.notify(experiment, ADVANCED, ROLLED_BACK)
    await until(lambda: len(receiver.requests) == 1)
    await sender.close()
    assert reads == [("ml", "hooks", "url")]
    assert receiver.requests[0].path == "/from-secret" and receiver.bodies()[0]["event"] == "RolledBack"


async def test_alertmanager_holds_a_paused_alert_until_the_experiment_leaves_the_state(
    alertmanager: Alertmanager,
) -> None:
    sender = notifier([{"name": "am", "type": "Alertmanager", "url": alertmanager.url}])
    experiment = {**EXPERIMENT, "metadata": {"namespace": "ml", "name": "am-story"}}
    sender.notify(experiment, PROGRESSING, METRICS_DOWN)
    await until(lambda: len(alertmanager.alerts(experiment="am-story")) == 1)
    (paused,) = alertmanager.alerts(experiment="am-story")
    assert paused["labels"] == {
        "alertname": "ArbiterExperimentMetricsUnavailable",
        "event": "MetricsUnavailable",
        "severity": "warning",
        "cluster": "prod-eu",
        "namespace": "ml",
        "experiment": "am-story",
        "source": "arbiter",
    }
    assert paused["status"]["state"] == "active"
    assert paused["annotations"]["description"] == "no metrics"
    assert paused["annotations"]["pause_reason"] == "MetricsUnavailable"

    # The rollback resolves the MetricsUnavailable alert and fires a critical RolledBack one.
    sender.notify(experiment, METRICS_DOWN, ROLLED_BACK)
    await until(
        lambda: (
            [a["labels"]["alertname"] for a in alertmanager.alerts(experiment="am-story")]
            == ["ArbiterExperimentRolledBack"]
        )
    )
    await sender.close()
    (rolled_back,) = alertmanager.alerts(experiment="am-story")
    assert rolled_back["labels"]["severity"] == "critical"
    assert rolled_back["annotations"]["pValue"] == "0.0031"


async def test_alertmanager_resolution_is_sent_even_when_the_new_transition_is_below_the_minimum(
    alertmanager: Alertmanager,
) -> None:
    sender = notifier(
        [{"name": "am-warn", "type": "Alertmanager", "url": alertmanager.url, "minSeverity": "Warning"}]
    )
    experiment = {**EXPERIMENT, "metadata": {"namespace": "ml", "name": "recovers"}}
    sender.notify(experiment, PROGRESSING, METRICS_DOWN)
    await until(lambda: len(alertmanager.alerts(experiment="recovers")) == 1)
    # MetricsRecovered is Info (below the minimum) but still resolves the Warning it ends.
    sender.notify(experiment, METRICS_DOWN, ADVANCED)
    await until(lambda: alertmanager.alerts(experiment="recovers") == [])
    await sender.close()


async def test_closing_lets_queued_notifications_go_out_first(receiver: HttpReceiver) -> None:
    """What the operator does at shutdown (Kopf's cleanup): queued notifications are sent, not lost."""
    sender = notifier([{"name": "drain", "type": "Webhook", "url": receiver.url}])
    for before, after in [({}, PROGRESSING), (PROGRESSING, ADVANCED), (ADVANCED, ROLLED_BACK)]:
        sender.notify(EXPERIMENT, before, after)
    assert receiver.attempts == 0
    await sender.close(timeout=10)
    assert [b["event"] for b in receiver.bodies()] == ["Started", "Advanced", "RolledBack"]


async def test_after_closing_nothing_more_is_queued_or_sent(receiver: HttpReceiver) -> None:
    sender = notifier([{"name": "closed", "type": "Webhook", "url": receiver.url}])
    await sender.close()
    sender.notify(EXPERIMENT, {}, PROGRESSING)
    await sender.close()
    assert receiver.attempts == 0


async def test_an_idle_receivers_worker_ends_and_a_new_one_starts_with_the_next_notification(
    receiver: HttpReceiver,
) -> None:
    """Receivers of deleted experiments must not keep a worker each for the life of the operator."""
    sender = notifier([{"name": "idle", "type": "Webhook", "url": receiver.url}])
    sender.idle_seconds = 0.2
    sender.notify(EXPERIMENT, {}, PROGRESSING)
    await until(lambda: len(receiver.requests) == 1)
    await until(lambda: "idle" not in sender._lanes)
    sender.notify(EXPERIMENT, PROGRESSING, ADVANCED)
    await until(lambda: len(receiver.requests) == 2)
    await sender.close()
    assert [b["event"] for b in receiver.bodies()] == ["Started", "Advanced"]
