"""Attribution tokens: which variant served a request, verifiable by any router replica.

A token is issued in the `Arbiter-Attribution` response header of every served request and comes back
with the outcome in `POST /feedback`. It is an HMAC-SHA256 over the experiment, the variant, the request
id and the issue time, so a replica that never saw the request (or one restarted since) can attribute a
label that arrives minutes later, with no shared state: only the keys are shared (a mounted Secret).

Format (ASCII, at most a few hundred bytes)::

    v1.<base64url(JSON [experiment, variant, request id, issued unix seconds])>.<base64url(HMAC)>

Rotation: the first key signs, every key verifies; add the new key first, wait for the longest label
delay (`max_age`), then drop the old one. Keys and tokens are never logged.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "ATTRIBUTION_HEADER",
    "DEFAULT_MAX_AGE_SECONDS",
    "MIN_KEY_BYTES",
    "Attribution",
    "AttributionError",
    "AttributionSigner",
    "load_keys",
]

ATTRIBUTION_HEADER = "Arbiter-Attribution"
DEFAULT_MAX_AGE_SECONDS = 7 * 24 * 3600
MIN_KEY_BYTES = 16
_VERSION = "v1"
_MAX_TOKEN_CHARS = 2048
# Clocks of two replicas differ a little; a token from further in the future is not ours.
_CLOCK_SKEW_SECONDS = 300


class AttributionError(ValueError):
    """A token that cannot be used; `reason` is the metric label, the message says why (without the token)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Attribution:
    """What a valid token says."""

    experiment: str
    variant: str
    request_id: str
    issued: int  # unix seconds


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class AttributionSigner:
    """Issue and verify attribution tokens.

    Args:
        keys: the HMAC keys, newest first: the first signs, all verify. Each at least 16 bytes.
        max_age: seconds a token stays valid after it was issued.
        clock: unix seconds now (tests pass their own).
    """

    def __init__(
        self,
        keys: Sequence[bytes],
        max_age: float = DEFAULT_MAX_AGE_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not keys:
            raise ValueError("attribution needs at least one key")
        if any(len(key) < MIN_KEY_BYTES for key in keys):
            raise ValueError(f"every attribution key must have at least {MIN_KEY_BYTES} bytes")
        if not max_age > 0:
            raise ValueError("the attribution max age must be positive")
        self._keys = tuple(keys)
        self.max_age = max_age
        self._clock = clock

    def _mac(self, key: bytes, payload: str) -> bytes:
        return hmac.new(key, f"{_VERSION}.{payload}".encode("ascii"), hashlib.sha256).digest()

    def issue(self, experiment: str, variant: str, request_id: str) -> str:
        """A token saying `variant` served `request_id` in `experiment`, now."""
        fields = [experiment, variant, request_id, int(self._clock())]
        payload = _b64(json.dumps(fields, separators=(",", ":"), ensure_ascii=False).encode())
        return f"{_VERSION}.{payload}.{_b64(self._mac(self._keys[0], payload))}"

    def verify(self, token: str) -> Attribution:
        """The attribution a token carries.

        Raises:
            AttributionError: reason `malformed`, `signature` (forged, or signed by a key no longer
                accepted) or `expired` (older than max_age, or issued in the future).
        """
        if not isinstance(token, str) or len(token) > _MAX_TOKEN_CHARS or token.count(".") != 2:
            raise AttributionError("malformed", "the attribution token is malformed")
        version, payload, mac_text = token.split(".")
        if version != _VERSION:
            raise AttributionError("malformed", "the attribution token has an unknown version")
        try:
            mac = _unb64(mac_text)
            payload.encode("ascii")
        except (binascii.Error, ValueError):
            raise AttributionError("malformed", "the attribution token is malformed") from None
        if not any(hmac.compare_digest(mac, self._mac(key, payload)) for key in self._keys):
            raise AttributionError("signature", "the attribution token's signature is not valid")
        try:
            fields = json.loads(_unb64(payload))
        except (binascii.Error, ValueError):  # signed by us, so only a key shared with a foreign signer
            raise AttributionError("malformed", "the attribution token is malformed") from None
        if (
            not isinstance(fields, list)
            or len(fields) != 4
            or not all(isinstance(f, str) for f in fields[:3])
            or isinstance(fields[3], bool)
            or not isinstance(fields[3], int)
        ):
            raise AttributionError("malformed", "the attribution token is malformed")
        experiment, variant, request_id, issued = fields
        age = self._clock() - issued
        if age > self.max_age:
            raise AttributionError(
                "expired",
                f"the attribution token expired (issued {int(age)} s ago, max age {self.max_age:g} s)",
            )
        if age < -_CLOCK_SKEW_SECONDS:
            raise AttributionError("expired", "the attribution token was issued in the future")
        return Attribution(experiment, variant, request_id, issued)


def load_keys(path: str | Path) -> list[bytes]:
    """Read attribution keys: a file with one key per line, or a directory of key files (a Secret volume).

    In a directory, files are read in name order and each file may hold several lines; hidden files
    (Kubernetes' `..data` links) are skipped. Blank lines and surrounding whitespace are ignored.

    Raises:
        ValueError: no keys, or a key shorter than 16 bytes (the message never contains a key).
    """
    source = Path(path)
    if not source.exists():
        raise ValueError(f"attribution keys {source}: no such file or directory")
    files = sorted(p for p in source.iterdir() if not p.name.startswith(".")) if source.is_dir() else [source]
    keys: list[bytes] = []
    for file in files:
        if file.is_file():
            keys += [line.strip() for line in file.read_bytes().splitlines() if line.strip()]
    if not keys:
        raise ValueError(f"no attribution keys in {source}")
    short = [i for i, key in enumerate(keys) if len(key) < MIN_KEY_BYTES]
    if short:
        raise ValueError(f"attribution key {short[0] + 1} in {source} is shorter than {MIN_KEY_BYTES} bytes")
    return keys
