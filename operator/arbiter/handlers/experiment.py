"""Kopf handlers for ModelExperiment: parse, ask the decision core, write status. Nothing else.

One daemon per experiment runs the loop: it re-reads the object from the API server every tick (so a
restart resumes from status, never from memory), delegates the decision to ``arbiter.rollout``, patches
status only when it changed and posts an Event per transition. Spec updates wake the daemon at once.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
from typing import Any

import kopf
from pydantic import ValidationError

from arbiter.api import GROUP, PLURAL, VERSION, ModelExperimentSpec, parse_spec
from arbiter.k8s import experiments as k8s_experiments
from arbiter.rollout.lifecycle import Outcome, admit

FINALIZER = f"{GROUP}/finalizer"
#: How often an experiment that is not progressing yet (Pending/Failed) is looked at again.
RESYNC_SECONDS = float(os.environ.get("ARBITER_RESYNC_SECONDS", "5"))


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    """Keep Kopf's bookkeeping in arbiter.dev annotations; status is ours alone."""
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    settings.posting.level = logging.INFO
    settings.watching.server_timeout = 60
    settings.watching.client_timeout = 90


@kopf.on.update(GROUP, VERSION, PLURAL, field="spec")
def wake_on_spec_change(memo: kopf.Memo, **_: Any) -> None:
    """A spec change is acted on at once, not at the next tick."""
    _wakeup(memo).set()


@kopf.daemon(GROUP, VERSION, PLURAL, cancellation_timeout=10)
async def experiment_loop(
    stopped: kopf.DaemonStopped,
    name: str,
    namespace: str | None,
    body: kopf.Body,
    memo: kopf.Memo,
    logger: kopf.Logger,
    **_: Any,
) -> None:
    """Look at the experiment every tick until it is deleted or the operator stops."""
    wakeup = _wakeup(memo)
    while not stopped:
        wakeup.clear()
        try:
            delay = await tick(namespace or "", name, body, logger)
        except Exception as exc:  # never let one bad object kill its loop: log, back off, retry
            logger.exception("tick failed for %s/%s: %s", namespace, name, exc)
            delay = RESYNC_SECONDS
        if delay is None:
            return
        waiter = asyncio.ensure_future(wakeup.wait())
        try:
            await asyncio.wait(
                {waiter, asyncio.ensure_future(stopped.wait())},
                timeout=delay,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            waiter.cancel()


@kopf.on.delete(GROUP, VERSION, PLURAL)
def on_delete(name: str, namespace: str | None, logger: kopf.Logger, **_: Any) -> None:
    """Nothing to clean up yet beyond what owner references remove; routing finalization hooks in here."""
    logger.info("ModelExperiment %s/%s deleted", namespace, name)


async def tick(namespace: str, name: str, ref: kopf.Body, logger: kopf.Logger) -> float | None:
    """One look at the experiment. Returns seconds until the next look, or None when it is gone.

    Args:
        namespace: the experiment's namespace.
        name: the experiment's name.
        ref: Kopf's body of the object, used only to address Events.
        logger: Kopf's per-object logger.
    """
    body = await asyncio.to_thread(k8s_experiments.get_experiment, namespace, name)
    if body is None:
        return None
    status: dict[str, Any] = dict(body.get("status") or {})
    spec, spec_error = _parse(body.get("spec") or {})
    problems: list[str] = []
    if spec is not None:
        states = await asyncio.to_thread(k8s_experiments.workload_states, namespace, spec.variants)
        problems = [p for state in states for p in state.problems]
    outcome = admit(
        status=status,
        generation=body.get("metadata", {}).get("generation"),
        spec=spec,
        spec_error=spec_error,
        workload_problems=problems,
        now=_now(),
    )
    await _apply(body, ref, status, outcome, logger)
    return RESYNC_SECONDS


async def _apply(
    body: dict[str, Any], ref: kopf.Body, before: dict[str, Any], outcome: Outcome, logger: kopf.Logger
) -> None:
    """Patch status when it changed, then post the events."""
    meta = body["metadata"]
    if outcome.changed(before):
        await asyncio.to_thread(k8s_experiments.patch_status, meta["namespace"], meta["name"], outcome.status)
    for event in outcome.events:
        logger.info("%s: %s", event.reason, event.message)
        kopf.event(ref, type=event.type, reason=event.reason, message=event.message)


def _parse(spec: dict[str, Any]) -> tuple[ModelExperimentSpec | None, str | None]:
    try:
        return parse_spec(spec), None
    except ValidationError as exc:
        return None, "; ".join(
            f"spec.{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" if err["loc"] else err["msg"]
            for err in exc.errors()
        )


def _wakeup(memo: kopf.Memo) -> asyncio.Event:
    if "wakeup" not in memo:
        memo["wakeup"] = asyncio.Event()
    event: asyncio.Event = memo["wakeup"]
    return event


def _now() -> str:
    return dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
