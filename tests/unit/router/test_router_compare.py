"""Shadow agreement: exact JSON equality, with an optional absolute tolerance for numbers."""

from __future__ import annotations

import pytest

from arbiter.router.compare import bodies_agree, json_agree


@pytest.mark.parametrize(
    ("served", "shadow", "tolerance", "agree"),
    [
        (b'{"score": 0.5, "label": "ok"}', b'{"label": "ok", "score": 0.5}', 0.0, True),  # key order
        (b'{"score": 0.5}', b'{"score": 0.500001}', 0.0, False),
        (b'{"score": 0.5}', b'{"score": 0.509}', 0.01, True),
        (b'{"score": 0.5}', b'{"score": 0.52}', 0.01, False),
        (b'{"scores": [0.1, 0.9]}', b'{"scores": [0.105, 0.895]}', 0.01, True),
        (b'{"scores": [0.1, 0.9]}', b'{"scores": [0.9, 0.1]}', 0.01, False),  # list order matters
        (b'{"scores": [0.1, 0.9]}', b'{"scores": [0.1]}', 0.01, False),
        (b'{"n": 1}', b'{"n": 1.0}', 0.0, True),  # JSON has one number type
        (b'{"fraud": true}', b'{"fraud": 1}', 0.5, False),  # booleans are not numbers
        (b'{"label": "a"}', b'{"label": "b"}', 1.0, False),  # tolerance never applies to strings
        (b'{"a": 1}', b'{"a": 1, "b": 2}', 0.0, False),
        (b'{"a": null}', b'{"a": 0}', 1.0, False),
        (b"plain text", b"plain text", 0.0, True),
        (b"plain text", b"plain  text", 0.0, False),
        (b'{"a": 1}', b"not json", 0.0, False),
        (b'{"a": {"b": [1, {"c": 2.0}]}}', b'{"a": {"b": [1, {"c": 2.004}]}}', 0.005, True),
    ],
)
def test_bodies_agree(served: bytes, shadow: bytes, tolerance: float, agree: bool) -> None:
    assert bodies_agree(served, shadow, tolerance) is agree
    assert bodies_agree(shadow, served, tolerance) is agree, "agreement is symmetric"


def test_nan_never_agrees_within_tolerance() -> None:
    assert not json_agree(float("nan"), 0.0, 1.0)
