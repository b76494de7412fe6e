"""Decide whether a shadow response agrees with the served one."""

from __future__ import annotations

import json
import math
from typing import Any

__all__ = ["bodies_agree", "json_agree"]

_NOT_JSON = object()


def _decode(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return _NOT_JSON


def json_agree(a: Any, b: Any, tolerance: float = 0.0) -> bool:
    """Compare two decoded JSON values: same structure, same strings, numbers within `tolerance`.

    Object key order does not matter; list order does. Booleans are not numbers here: `true`
    never equals `1`. With `tolerance` 0 numbers must be equal (`1` equals `1.0`, as in JSON).
    """
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        if a == b:
            return True
        if tolerance <= 0 or math.isnan(a) or math.isnan(b):
            return False
        return abs(a - b) <= tolerance
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            return False
        return all(json_agree(a[k], b[k], tolerance) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(json_agree(x, y, tolerance) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


def bodies_agree(served: bytes, shadow: bytes, tolerance: float = 0.0) -> bool:
    """Compare two response bodies: as JSON when both parse, else byte for byte."""
    if served == shadow:
        return True
    left = _decode(served)
    right = _decode(shadow)
    if left is _NOT_JSON or right is _NOT_JSON:
        return False
    return json_agree(left, right, tolerance)
