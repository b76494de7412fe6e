"""Standard metav1.Condition bookkeeping, as pure functions over status dicts."""

from __future__ import annotations

from typing import Any, Literal

ConditionStatus = Literal["True", "False", "Unknown"]


def set_condition(
    conditions: list[dict[str, Any]] | None,
    type_: str,
    status: ConditionStatus,
    reason: str,
    message: str,
    now: str,
    generation: int | None = None,
) -> list[dict[str, Any]]:
    """Return the condition list with one condition set, keeping lastTransitionTime when status is unchanged.

    Args:
        conditions: the current list (as stored in status), or None.
        type_: condition type, e.g. ``Ready``.
        status: ``True``, ``False`` or ``Unknown``.
        reason: CamelCase reason.
        message: human readable detail.
        now: RFC 3339 timestamp used when the status changes.
        generation: the spec generation the condition is about.

    Returns:
        A new list; the input is not modified. Order is kept, a new type is appended.
    """
    result: list[dict[str, Any]] = []
    found = False
    for condition in conditions or []:
        if condition.get("type") != type_:
            result.append(dict(condition))
            continue
        found = True
        changed = condition.get("status") != status
        result.append(
            _condition(
                type_,
                status,
                reason,
                message,
                now if changed else condition.get("lastTransitionTime") or now,
                generation,
            )
        )
    if not found:
        result.append(_condition(type_, status, reason, message, now, generation))
    return result


def get_condition(conditions: list[dict[str, Any]] | None, type_: str) -> dict[str, Any] | None:
    """The condition of that type, or None."""
    return next((c for c in conditions or [] if c.get("type") == type_), None)


def _condition(
    type_: str, status: str, reason: str, message: str, when: str, generation: int | None
) -> dict[str, Any]:
    condition: dict[str, Any] = {
        "type": type_,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": when,
    }
    if generation is not None:
        condition["observedGeneration"] = generation
    return condition
