"""A corpus of invalid ModelExperiment specs: schema-driven mutations of the examples plus hand-written files.

Mutations are derived from the generated CRD schema, not listed case by case: for every field an
example sets, each rule its schema node declares (type, enum, pattern, min/max length, minimum/maximum,
item counts, duration bounds in CEL, no unknown properties) yields one value that breaks exactly that
rule. Every case says which field the API server must name in its refusal.

Hand-written cases live in ``tests/data/invalid/*.yaml``: a whole ModelExperiment manifest whose
first line is ``# field: <path the error must name>``.

Used by tests/integration/test_invalid_corpus.py (the real API server refuses each) and
tests/unit/api/test_invalid_corpus_pydantic.py (the pydantic types refuse each too).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from arbiter.api.crd import openapi_schema

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
HAND_WRITTEN = sorted((ROOT / "tests" / "data" / "invalid").glob("*.yaml"))
UNKNOWN_FIELD = "bogusField"

Path_ = tuple[str | int, ...]


@dataclass(frozen=True)
class InvalidCase:
    """One invalid ModelExperiment.

    Attributes:
        id: a readable, unique id (``<example>:<path>:<rule>`` or the file name).
        manifest: the whole object (apiVersion, kind, metadata.name, spec).
        field: the path the API server's error must name, e.g. ``spec.steps[0].weight``.
        rule: which rule the case breaks (``type``, ``pattern``, ``duration``, ``unknown``...).
    """

    id: str
    manifest: dict[str, Any]
    field: str
    rule: str


def field_path(path: Path_) -> str:
    """A path as the API server writes it: ``spec.steps[0].weight``."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


def _experiments(path: Path) -> list[dict[str, Any]]:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    # Entries that name a MetricTemplate have no pydantic twin until resolved (tests/unit/metrics).
    return [d for d in docs if d.get("kind") == "ModelExperiment" and "templateRef" not in str(d)]


def _set(node: Any, path: Path_, value: Any) -> None:
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value


def _bad_pattern_value(pattern: str, min_length: int) -> str | None:
    """A string that the pattern refuses (patterns are searched, as the API server does)."""
    for candidate in ("Not_A-Name!", " ", "ftp://x", "-starts-with-dash", "9starts-with-digit", "30 seconds"):
        if len(candidate) >= min_length and not re.search(pattern, candidate):
            return candidate
    return None


def _mutations(schema: dict[str, Any], value: Any) -> Iterator[tuple[str, Any]]:
    """(rule, bad value) for each rule a schema node declares."""
    kind = schema.get("type")
    if kind == "string":
        yield "type", 42
        if "enum" in schema:
            yield "enum", "NotAValue"
            return
        rules = " ".join(str(r.get("rule", "")) for r in schema.get("x-kubernetes-validations", []))
        if "duration(" in rules:
            yield "duration-zero", "0s"
            yield "duration-tiny", "1ms"
            yield "duration-huge", "100000h"
        if "pattern" in schema:
            bad = _bad_pattern_value(schema["pattern"], schema.get("minLength", 0))
            if bad is not None:
                yield "pattern", bad
        if schema.get("minLength", 0) >= 1:
            yield "empty", ""
        if "maxLength" in schema:
            yield "too-long", "a" * (schema["maxLength"] + 1)
    elif kind in ("integer", "number"):
        yield "type", "many"
        if kind == "integer":
            yield "not-integer", 1.5
        if "minimum" in schema:
            low = schema["minimum"]
            yield "below-minimum", low if schema.get("exclusiveMinimum") else low - 1
        if "maximum" in schema:
            high = schema["maximum"]
            yield "above-maximum", high if schema.get("exclusiveMaximum") else high + 1
    elif kind == "boolean":
        yield "type", "maybe"
    elif kind == "array":
        yield "type", "not-a-list"
        if schema.get("minItems", 0) >= 1:
            yield "too-few", []
        if "maxItems" in schema and isinstance(value, list) and value:
            yield "too-many", [copy.deepcopy(value[0]) for _ in range(schema["maxItems"] + 1)]
    elif kind == "object" and "properties" in schema:
        yield "type", "not-an-object"
        if isinstance(value, dict):
            yield "unknown", {**value, UNKNOWN_FIELD: True}


def _walk(schema: dict[str, Any], value: Any, path: Path_) -> Iterator[tuple[Path_, dict[str, Any], Any]]:
    """Every (path, schema node, value) an example sets under ``path``."""
    yield path, schema, value
    if isinstance(value, dict):
        for name, child in value.items():
            sub = schema.get("properties", {}).get(name)
            if sub is not None:
                yield from _walk(sub, child, (*path, name))
    elif isinstance(value, list) and "items" in schema:
        for index, child in enumerate(value[:1]):  # the first item stands for every item
            yield from _walk(schema["items"], child, (*path, index))


def generated_cases() -> list[InvalidCase]:
    """Schema-driven mutations of every example's ModelExperiments, one per (field, rule)."""
    spec_schema = openapi_schema()["properties"]["spec"]
    seen: set[tuple[str, str]] = set()
    cases: list[InvalidCase] = []
    for example in EXAMPLES:
        for experiment in _experiments(example):
            base = {
                "apiVersion": experiment["apiVersion"],
                "kind": experiment["kind"],
                "metadata": {"name": "invalid"},
                "spec": experiment["spec"],
            }
            for path, schema, value in _walk(spec_schema, experiment["spec"], ("spec",)):
                for rule, bad in _mutations(schema, value):
                    # Item indexes do not matter for de-duplication: one case per field and rule.
                    key = (re.sub(r"\[\d+\]", "[]", field_path(path)), rule)
                    if key in seen:
                        continue
                    seen.add(key)
                    manifest = copy.deepcopy(base)
                    _set(manifest, path, bad)
                    named = field_path((*path, UNKNOWN_FIELD) if rule == "unknown" else path)
                    cases.append(
                        InvalidCase(f"{example.stem}:{field_path(path)}:{rule}", manifest, named, rule)
                    )
    return cases


def hand_written_cases() -> list[InvalidCase]:
    """The manifests of tests/data/invalid, each naming its expected field on its first line."""
    cases = []
    for path in HAND_WRITTEN:
        text = path.read_text()
        match = re.match(r"#\s*field:\s*(\S+)", text)
        if match is None:
            raise ValueError(f"{path}: the first line must be `# field: <path>`")
        manifest = yaml.safe_load(text)
        cases.append(InvalidCase(path.name, manifest, match.group(1), "hand-written"))
    return cases


def all_cases() -> list[InvalidCase]:
    """The whole corpus."""
    return generated_cases() + hand_written_cases()
