"""Which ModelExperiments this operator replica handles: a Kubernetes label selector (``arbiter run --selector``).

One replica handles every experiment it watches. To spread many experiments over several replicas,
give each replica its own namespaces (``arbiter run -n``) or its own label selector; the selector is
matched by the operator (Kopf's ``when`` filter) on the objects its watch delivers, so replicas must
be given disjoint selectors, e.g. ``arbiter.dev/shard=a`` and ``arbiter.dev/shard=b``.

Supported syntax (as ``kubectl -l``): ``key=value``, ``key==value``, ``key!=value``, ``key``, ``!key``,
``key in (a,b)``, ``key notin (a,b)``, joined by commas.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["LabelSelector", "SelectorError", "configure", "in_shard"]

_KEY = r"[A-Za-z0-9]([-A-Za-z0-9_./]*[A-Za-z0-9])?"
_VALUE = r"([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?"
_SET = re.compile(rf"^(?P<key>{_KEY})\s+(?P<op>in|notin)\s+\((?P<values>[^)]*)\)$")
_EQUALITY = re.compile(rf"^(?P<key>{_KEY})\s*(?P<op>==|=|!=)\s*(?P<value>{_VALUE})$")
_EXISTS = re.compile(rf"^(?P<neg>!?)\s*(?P<key>{_KEY})$")


class SelectorError(ValueError):
    """The selector text is not a label selector."""


@dataclass(frozen=True)
class _Requirement:
    key: str
    op: str  # in, notin, exists, absent
    values: frozenset[str] = frozenset()

    def matches(self, labels: Mapping[str, str]) -> bool:
        if self.op == "exists":
            return self.key in labels
        if self.op == "absent":
            return self.key not in labels
        if self.op == "in":
            return labels.get(self.key) in self.values
        return labels.get(self.key) not in self.values


@dataclass(frozen=True)
class LabelSelector:
    """A parsed label selector; the empty selector matches everything."""

    requirements: tuple[_Requirement, ...] = ()
    text: str = ""

    @classmethod
    def parse(cls, text: str | None) -> LabelSelector:
        """Parse ``kubectl -l`` syntax.

        Raises:
            SelectorError: the text is not a selector; the message names the bad part.
        """
        if not text or not text.strip():
            return cls()
        requirements = []
        for part in _split(text):
            requirements.append(_requirement(part))
        return cls(tuple(requirements), text.strip())

    def matches(self, labels: Mapping[str, str] | None) -> bool:
        """True when every requirement holds for these labels."""
        labels = labels or {}
        return all(r.matches(labels) for r in self.requirements)


def _split(text: str) -> list[str]:
    """Split on commas outside parentheses."""
    parts, depth, current = [], 0, ""
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            parts.append(current.strip())
            current = ""
        else:
            current += char
    parts.append(current.strip())
    return parts


def _requirement(part: str) -> _Requirement:
    if match := _SET.match(part):
        values = frozenset(v.strip() for v in match["values"].split(",") if v.strip())
        return _Requirement(match["key"], match["op"], values)
    if match := _EQUALITY.match(part):
        op = "notin" if match["op"] == "!=" else "in"
        return _Requirement(match["key"], op, frozenset({match["value"]}))
    if match := _EXISTS.match(part):
        return _Requirement(match["key"], "absent" if match["neg"] else "exists")
    raise SelectorError(f"not a label selector requirement: {part!r}")


_shard = LabelSelector()


def configure(selector: str | None) -> LabelSelector:
    """Set the selector of this process (``arbiter run --selector``); before the operator starts."""
    global _shard
    _shard = LabelSelector.parse(selector)
    return _shard


def in_shard(labels: Mapping[str, str], **_: Any) -> bool:
    """Kopf ``when`` filter: does this replica handle the object?"""
    return _shard.matches(labels)
