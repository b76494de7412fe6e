"""Decide whether a shadow response agrees with the served one, and by how much their scores differ."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from arbiter.router.config import ShadowCompare, parse_json_pointer

__all__ = ["MISSING", "CompareRules", "Comparison", "bodies_agree", "json_agree", "resolve_pointer"]

_NOT_JSON = object()
MISSING: Any = object()
"""What :func:`resolve_pointer` returns when nothing is at the pointer (JSON null is None)."""
_MISSING = MISSING


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


def _step(value: Any, token: str) -> Any:
    if isinstance(value, dict):
        return value.get(token, _MISSING)
    if isinstance(value, list):
        # RFC 6901: an index is "0" or digits without a leading zero.
        if not token.isdigit() or (len(token) > 1 and token[0] == "0"):
            return _MISSING
        index = int(token)
        return value[index] if index < len(value) else _MISSING
    return _MISSING


def resolve_pointer(document: Any, tokens: tuple[str, ...]) -> Any:
    """The value at a parsed JSON pointer (from :func:`parse_json_pointer`), or :data:`MISSING`."""
    value = document
    for token in tokens:
        value = _step(value, token)
        if value is _MISSING:
            break
    return value


def _remove(document: Any, tokens: tuple[str, ...]) -> None:
    """Remove the value at ``tokens`` (an object member, or a list element replaced by null) in place."""
    if not tokens:
        return
    parent = resolve_pointer(document, tokens[:-1])
    last = tokens[-1]
    if isinstance(parent, dict):
        parent.pop(last, None)
    elif isinstance(parent, list) and _step(parent, last) is not _MISSING:
        # Deleting would shift the later elements' indexes; both answers get the same null instead.
        parent[int(last)] = None


def _numbers(value: Any) -> list[float] | None:
    """A number or a non-empty list of numbers as floats; None for anything else."""
    items = value if isinstance(value, list) else [value]
    if not items:
        return None
    out = []
    for item in items:
        if isinstance(item, bool) or not isinstance(item, int | float) or math.isnan(item):
            return None
        out.append(float(item))
    return out


@dataclass(frozen=True, slots=True)
class Comparison:
    """One shadow answer judged against the served one.

    Attributes:
        agree: the answers agree under the rules.
        score_delta: absolute score difference (largest over a list), or None without a readable score.
        unreadable: why the rules could not read an answer (``not_json``, ``field`` or ``score``), else "".
    """

    agree: bool
    score_delta: float | None = None
    unreadable: str = ""


@dataclass(frozen=True, slots=True)
class CompareRules:
    """``shadow.compare`` with its JSON pointers parsed once, applied to every mirrored answer."""

    tolerance: float = 0.0
    fields: tuple[tuple[str, ...], ...] = ()
    ignore: tuple[tuple[str, ...], ...] = ()
    score: tuple[str, ...] | None = None

    @classmethod
    def build(cls, compare: ShadowCompare) -> CompareRules:
        return cls(
            tolerance=compare.numeric_tolerance,
            fields=tuple(parse_json_pointer(p) for p in compare.fields),
            ignore=tuple(parse_json_pointer(p) for p in compare.ignore),
            score=parse_json_pointer(compare.score) if compare.score is not None else None,
        )

    @property
    def whole_body(self) -> bool:
        """True when the rules compare raw bodies (no pointers at all): the cheap path."""
        return not self.fields and not self.ignore and self.score is None

    def compare(self, served_status: int, served: bytes, shadow_status: int, shadow: bytes) -> Comparison:
        """Judge the shadow's answer against the served one.

        Answers with different status codes never agree. Without pointers, bodies are compared whole
        (:func:`bodies_agree`). With pointers both bodies must be JSON (else ``unreadable="not_json"``);
        ``ignore`` is removed from both, then every ``fields`` pointer (or the whole rest) must agree; a
        pointer missing from either answer is a disagreement (``unreadable="field"``). The score delta is
        measured whether or not the answers agree.
        """
        same_status = served_status == shadow_status
        if self.whole_body:
            return Comparison(same_status and bodies_agree(served, shadow, self.tolerance))
        left, right = _decode(served), _decode(shadow)
        if left is _NOT_JSON or right is _NOT_JSON:
            return Comparison(False, None, "not_json")
        unreadable = ""
        delta: float | None = None
        if self.score is not None:
            a = _numbers(resolve_pointer(left, self.score))
            b = _numbers(resolve_pointer(right, self.score))
            if a is None or b is None or len(a) != len(b):
                unreadable = "score"
            else:
                delta = max(abs(x - y) for x, y in zip(a, b, strict=True))
        for tokens in self.ignore:
            _remove(left, tokens)
            _remove(right, tokens)
        if self.fields:
            agree = True
            for tokens in self.fields:
                a_value, b_value = resolve_pointer(left, tokens), resolve_pointer(right, tokens)
                if a_value is _MISSING or b_value is _MISSING:
                    agree, unreadable = False, "field"
                    break
                if not json_agree(a_value, b_value, self.tolerance):
                    agree = False
                    break
        else:
            agree = json_agree(left, right, self.tolerance)
        return Comparison(same_status and agree, delta, unreadable)
