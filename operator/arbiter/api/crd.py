"""Generate the ModelExperiment CustomResourceDefinition from the pydantic types.

Run as ``python -m arbiter.api.crd --out FILE`` to write it, or ``--check FILE`` to fail when the file
differs from what the types generate (CI runs the check, so the CRD can never go stale).
"""

from __future__ import annotations

import argparse
import copy
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import yaml
from pydantic import BaseModel

from arbiter.api import v1alpha1 as api
from arbiter.api.metrictemplate import TemplateRef, allow_template_refs

JsonSchema = dict[str, Any]

# Keys of pydantic's JSON schema that a Kubernetes structural schema does not take.
_DROPPED_KEYS = {"title", "$defs", "additionalProperties_false"}

# Lists whose items are identified by `name`: the API server then rejects duplicates itself and
# server-side apply merges them per item.
_LIST_MAP_KEYS = {
    ("spec", "challengers"): ["name"],
    ("spec", "analysis", "guardrails"): ["name"],
    ("spec", "analysis", "secondary"): ["name"],
    ("spec", "gates"): ["name"],
    ("status", "conditions"): ["type"],
}

PRINTER_COLUMNS = [
    {"name": "Mode", "type": "string", "jsonPath": ".spec.mode", "description": "Canary, Shadow or ABTest."},
    {
        "name": "Phase",
        "type": "string",
        "jsonPath": ".status.phase",
        "description": "Where the experiment is.",
    },
    {
        "name": "Step",
        "type": "integer",
        "jsonPath": ".status.currentStep",
        "description": "Current step index.",
    },
    {
        "name": "Challenger",
        "type": "integer",
        "jsonPath": ".status.challengerWeight",
        "description": "Total challenger traffic percent.",
    },
    {
        "name": "Decision",
        "type": "string",
        "jsonPath": ".status.decision.outcome",
        "description": "The last decision.",
    },
    {
        "name": "Dry-Run",
        "type": "boolean",
        "jsonPath": ".spec.dryRun",
        "description": "A dry run: decides, never changes traffic.",
    },
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    # -o wide: the challenger ahead on the primary metric (status.leading, written by the operator).
    {
        "name": "Leader",
        "type": "string",
        "jsonPath": ".status.leading.variant",
        "priority": 1,
        "description": "The challenger ahead on the primary metric.",
    },
    {
        "name": "Lift",
        "type": "number",
        "jsonPath": ".status.leading.relativeLift",
        "priority": 1,
        "description": "The leading challenger's relative lift over the champion (0.05 = +5%).",
    },
    {
        "name": "P-Value",
        "type": "number",
        "jsonPath": ".status.leading.pValue",
        "priority": 1,
        "description": "The leading challenger's p-value on the primary metric.",
    },
    # -o wide: the forecast of the decision (status.forecast, written by the engine).
    {
        "name": "Decide-In",
        "type": "string",
        "jsonPath": ".status.forecast.decisionIn",
        "priority": 1,
        "description": "Median time to a final verdict at the observed traffic if the true effect is the MDE.",
    },
    {
        "name": "P-Win",
        "type": "number",
        "jsonPath": ".status.forecast.conditionalPower",
        "priority": 1,
        "description": "The probability that the test ends in Win if the true effect is the observed one.",
    },
]


def _resolve(schema: JsonSchema, defs: dict[str, JsonSchema]) -> JsonSchema:
    """Inline ``$ref`` and fold ``anyOf [X, null]`` (pydantic's Optional) into X."""
    if "$ref" in schema:
        target = defs[schema["$ref"].rsplit("/", 1)[-1]]
        merged = {**copy.deepcopy(target), **{k: v for k, v in schema.items() if k != "$ref"}}
        return _resolve(merged, defs)
    if "anyOf" in schema:
        options = [o for o in schema["anyOf"] if o.get("type") != "null"]
        if len(options) != 1:
            raise ValueError(f"unions other than Optional are not structural: {schema}")
        rest = {k: v for k, v in schema.items() if k != "anyOf"}
        return _resolve({**copy.deepcopy(options[0]), **rest}, defs)
    if "allOf" in schema and len(schema["allOf"]) == 1:
        rest = {k: v for k, v in schema.items() if k != "allOf"}
        return _resolve({**copy.deepcopy(schema["allOf"][0]), **rest}, defs)
    return schema


def _structural(schema: JsonSchema, defs: dict[str, JsonSchema], path: tuple[str, ...]) -> JsonSchema:
    """Turn one pydantic JSON-schema node into a Kubernetes structural schema node."""
    node = _resolve(schema, defs)
    out: JsonSchema = {}
    for key, value in node.items():
        if key in _DROPPED_KEYS or (key == "additionalProperties" and value is False):
            continue
        if key == "properties":
            out["properties"] = {
                name: _structural(sub, defs, (*path, name)) for name, sub in sorted(value.items())
            }
        elif key == "items":
            out["items"] = _structural(value, defs, (*path, "[]"))
        elif key == "additionalProperties" and value is True:
            out["x-kubernetes-preserve-unknown-fields"] = True  # dict[str, Any]: free-form
        elif key == "additionalProperties" and isinstance(value, dict):
            out["additionalProperties"] = _structural(value, defs, path)
        elif key in ("exclusiveMinimum", "exclusiveMaximum"):
            # JSON Schema 2020 uses a number here, OpenAPI v3 (Kubernetes) a bool next to minimum/maximum.
            bound = "minimum" if key == "exclusiveMinimum" else "maximum"
            out[bound] = value
            out[key] = True
        elif (key == "minLength" and value == 0) or (key == "default" and value is None):
            continue
        elif key == "const":
            out["enum"] = [value]
        else:
            out[key] = value
    if "default" in out and isinstance(out["default"], dict | list) and node.get("type") == "object":
        # Object defaults are written as {} so the API server fills nested defaults field by field.
        out["default"] = {}
    if out.get("type") == "object" and "properties" not in out and "additionalProperties" not in out:
        # An object without a declared shape keeps what it is given instead of being pruned empty.
        out["x-kubernetes-preserve-unknown-fields"] = True
    if tuple(path) in _LIST_MAP_KEYS:
        out["x-kubernetes-list-type"] = "map"
        out["x-kubernetes-list-map-keys"] = _LIST_MAP_KEYS[tuple(path)]
    return out


def _object_schema(model: type[BaseModel], root: str) -> JsonSchema:
    raw = model.model_json_schema(by_alias=True, mode="validation", ref_template="#/$defs/{model}")
    defs = cast(dict[str, JsonSchema], raw.get("$defs", {}))
    return _structural(raw, defs, (root,))


def openapi_schema() -> JsonSchema:
    """The full openAPIV3Schema of the ModelExperiment custom resource."""
    spec = _object_schema(api.ModelExperimentSpec, "spec")
    # Guardrails and metrics may name a MetricTemplate instead (arbiter.api.metrictemplate).
    spec = allow_template_refs(spec, _object_schema(TemplateRef, "templateRef"))
    status = _object_schema(api.ModelExperimentStatus, "status")
    return {
        "type": "object",
        "description": "A ModelExperiment rolls out one or more challenger models against a champion "
        "(canary, shadow or A/B/n) and promotes or rolls back on statistical evidence.",
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string", "description": "APIVersion of this object."},
            "kind": {"type": "string", "description": "Kind of this object."},
            "metadata": {"type": "object"},
            "spec": spec,
            "status": status,
        },
    }


def crd() -> JsonSchema:
    """The complete CustomResourceDefinition object."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{api.PLURAL}.{api.GROUP}",
            "labels": {"app.kubernetes.io/name": "arbiter", "app.kubernetes.io/part-of": "arbiter"},
        },
        "spec": {
            "group": api.GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": api.KIND,
                "listKind": f"{api.KIND}List",
                "plural": api.PLURAL,
                "singular": api.SINGULAR,
                "shortNames": list(api.SHORT_NAMES),
                "categories": ["arbiter"],
            },
            "versions": [
                {
                    "name": api.VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": PRINTER_COLUMNS,
                    "schema": {"openAPIV3Schema": openapi_schema()},
                }
            ],
        },
    }


def render() -> str:
    """The CRD as the YAML text committed in crds/ and charts/arbiter/crds/."""
    header = "# Generated by `make crds` from operator/arbiter/api; do not edit by hand.\n"
    return header + yaml.dump(crd(), Dumper=_NoAliasDumper, sort_keys=False, width=100)


class _NoAliasDumper(yaml.SafeDumper):
    """A YAML dumper that writes repeated values out instead of as anchors and aliases."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def main(argv: Sequence[str] | None = None) -> int:
    """Write (--out) or verify (--check) the generated CRD files."""
    parser = argparse.ArgumentParser(prog="python -m arbiter.api.crd", description=__doc__)
    parser.add_argument("--out", action="append", default=[], help="write the CRD to this file")
    parser.add_argument("--check", action="append", default=[], help="fail if this file is stale")
    args = parser.parse_args(argv)
    text = render()
    for out in args.out:
        path = Path(out)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(f"wrote {path}")
    stale = [c for c in args.check if not Path(c).exists() or Path(c).read_text() != text]
    for path in stale:
        print(f"{path} is stale: run `make crds` and commit the result", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
