"""Assign a request to a variant: sticky weighted rendezvous hashing, or a random weighted draw.

Sticky assignment uses weighted rendezvous (highest-random-weight) hashing: for every variant
`i` with weight `w_i > 0` the key gets a uniform number `u_i = H(experiment, variant_i, key)` in
(0, 1) and the score `-ln(u_i) / w_i`; the variant with the smallest score wins. The scores are
independent exponential variables with rates `w_i`, so variant `i` wins with probability
`w_i / sum(w)` exactly. A key's score for a variant depends only on that variant's own weight,
so when one variant's weight grows its scores shrink and all others stay put: a key can only move
*to* that variant, and keys already on it stay. Adding a variant likewise only moves keys onto the
new one. Because the variant *name* (not its position) is hashed, reordering the list moves nobody.

H is BLAKE2b with an 8-byte digest, keyed with BLAKE2b-256(experiment name), over
`variant name + b"\\0" + key` (all UTF-8); `u = (big-endian uint64 + 0.5) / 2**64`. Keying by the
experiment makes different experiments' assignments independent.
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
import math
import random
from collections.abc import Sequence

__all__ = ["Assigner", "unit_hash"]

_TWO_64 = float(2**64)


def _experiment_key(experiment: str) -> bytes:
    return hashlib.blake2b(experiment.encode("utf-8"), digest_size=32).digest()


def unit_hash(experiment: str, variant: str, key: str) -> float:
    """Return the key's uniform number in (0, 1) for one variant of one experiment."""
    digest = hashlib.blake2b(
        variant.encode("utf-8") + b"\0" + key.encode("utf-8"), digest_size=8, key=_experiment_key(experiment)
    ).digest()
    return (int.from_bytes(digest, "big") + 0.5) / _TWO_64


class Assigner:
    """Pick a variant for a request from (name, weight) pairs; variants with weight 0 never win.

    Args:
        experiment: the experiment name, the salt of the sticky hash.
        weights: (variant name, relative weight) pairs; at least one weight must be positive.
    """

    __slots__ = ("_cumulative", "_hashers", "_names", "_random", "_total", "experiment", "weights")

    def __init__(self, experiment: str, weights: Sequence[tuple[str, float]]) -> None:
        positive = [(name, float(w)) for name, w in weights if w > 0]
        if not positive:
            raise ValueError("at least one variant needs a positive weight")
        self.experiment = experiment
        self.weights: tuple[tuple[str, float], ...] = tuple(positive)
        key = _experiment_key(experiment)
        # A pre-keyed hasher per variant that already absorbed the variant name: per request we
        # copy it and feed only the key, the cheapest way to get the hash above.
        self._hashers = []
        for name, weight in positive:
            hasher = hashlib.blake2b(digest_size=8, key=key)
            hasher.update(name.encode("utf-8") + b"\0")
            self._hashers.append((name, 1.0 / weight, hasher))
        self._names = [name for name, _ in positive]
        self._cumulative = list(itertools.accumulate(w for _, w in positive))
        self._total = self._cumulative[-1]
        self._random = random.Random()

    def sticky(self, key: str) -> str:
        """Return the variant for this key; the same key always gets the same variant."""
        if len(self._hashers) == 1:
            return self._names[0]
        data = key.encode("utf-8", "surrogatepass")
        best_name = ""
        best_score = math.inf
        for name, inverse_weight, prefix in self._hashers:
            hasher = prefix.copy()
            hasher.update(data)
            u = (int.from_bytes(hasher.digest(), "big") + 0.5) / _TWO_64
            score = -math.log(u) * inverse_weight
            if score < best_score:
                best_score = score
                best_name = name
        return best_name

    def draw(self) -> str:
        """Return a variant drawn at random in proportion to the weights."""
        if len(self._names) == 1:
            return self._names[0]
        point = self._random.random() * self._total
        # min(): rounding can make `point` equal the total.
        return self._names[min(bisect.bisect_right(self._cumulative, point), len(self._names) - 1)]
