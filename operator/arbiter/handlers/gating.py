"""The handler's I/O for webhook gates and dry runs: call the gates a tick asks for, read the live split.

:func:`ask_gates` turns the engine's :class:`~arbiter.rollout.gates.GateCall` list into HTTP calls
(:mod:`arbiter.gates`) and their answers into the engine's typed verdicts. :func:`read_live_split` reads
what the routing provider's object carries, for a dry run that judges a split it never writes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from arbiter.api import ModelExperimentSpec, parse_duration
from arbiter.gates import GateRequest, call_gates
from arbiter.rollout.dry_run import LiveSplit
from arbiter.rollout.gates import GateCall, GateVerdict
from arbiter.routing import RoutingError
from arbiter.routing import provider_for as routing_provider_for


def gate_payload(
    spec: ModelExperimentSpec, namespace: str, name: str, status: Mapping[str, Any], call: GateCall
) -> dict[str, Any]:
    """The JSON a gate receives: the experiment, where it is, and the action waiting for the gate.

    Shaped like Flagger's webhook payload (``name``, ``namespace``, ``phase``, ``metadata``) plus what
    an ML rollout adds: the gate's type, the pending action, the variants and their weights.
    """
    gate = next(g for g in spec.gates or () if g.name == call.name)
    return {
        "name": name,
        "namespace": namespace,
        "phase": status.get("phase"),
        "gate": call.name,
        "type": call.type.value,
        "action": call.action,
        "step": call.step,
        "target": call.target,
        "currentStep": status.get("currentStep"),
        "champion": spec.champion.name,
        "challengers": [c.name for c in spec.challengers],
        "weights": status.get("weights"),
        "decision": status.get("decision"),
        "dryRun": spec.dry_run,
        "metadata": dict(gate.metadata or {}),
    }


def ask_gates(
    spec: ModelExperimentSpec,
    namespace: str,
    name: str,
    status: Mapping[str, Any],
    calls: Sequence[GateCall],
) -> dict[str, GateVerdict]:
    """Call the gates (at once, each within its timeout) and return the engine's verdicts by gate name."""
    by_name = {g.name: g for g in spec.gates or ()}
    requests = []
    for call in calls:
        gate = by_name[call.name]
        secret = gate.secret_key_ref
        requests.append(
            GateRequest(
                name=call.name,
                payload=gate_payload(spec, namespace, name, status, call),
                timeout=parse_duration(gate.timeout),
                url=gate.url,
                secret=(namespace, secret.name, secret.key) if secret is not None else None,
            )
        )
    answers = call_gates(requests)
    return {n: GateVerdict(a.passed, a.code, a.message) for n, a in answers.items()}


def read_live_split(spec: ModelExperimentSpec, namespace: str, name: str) -> LiveSplit:
    """The weights the routing provider's object carries now (read only: a dry run never writes)."""
    provider = routing_provider_for(spec, namespace, name)
    try:
        state = provider.get_weights()
    except RoutingError as exc:
        return LiveSplit(None, f"could not read the live split from {spec.routing.provider.value}: {exc}")
    return LiveSplit(dict(state.weights), f"read from {spec.routing.provider.value}")
