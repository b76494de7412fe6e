"""Webhook gates: POST the experiment's pending action to a URL and report the answer (HTTP 2xx passes).

The I/O half of ``spec.gates``; the decision what a gate's answer means is the engine's
(:mod:`arbiter.rollout.gates`). Every call is bounded by its gate's timeout, and :func:`call_gates`
returns within the longest of them (plus a small grace) even when a server never answers: a gate
cannot wedge a tick.
"""

from arbiter.gates.webhook import GateAnswer, GateRequest, call_gate, call_gates

__all__ = ["GateAnswer", "GateRequest", "call_gate", "call_gates"]
