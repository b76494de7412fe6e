"""The generated CRD is structural, complete, deterministic and matches the committed files."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from arbiter.api import crd

ROOT = Path(__file__).parents[3]


def walk(node: Any, path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    if isinstance(node, dict):
        yield path, node
        for key, value in node.items():
            yield from walk(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from walk(value, f"{path}[{i}]")


def schema() -> dict[str, Any]:
    return crd.crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def test_schema_is_structural() -> None:
    for path, node in walk(schema()):
        for forbidden in ("$ref", "anyOf", "allOf", "oneOf", "$defs", "title"):
            assert forbidden not in node or path.endswith(".properties"), f"{forbidden} at {path}"
        if node.get("additionalProperties") is False:
            raise AssertionError(f"additionalProperties: false at {path}")
        assert node.get("default", 0) is not None, f"null default at {path}"


def test_every_spec_field_has_a_description() -> None:
    missing = []
    for path, node in walk(schema()["properties"]["spec"]):
        for name, prop in node.get("properties", {}).items():
            if not prop.get("description"):
                missing.append(f"{path}.{name}")
    assert missing == []


def test_printer_columns_and_short_name() -> None:
    spec = crd.crd()["spec"]
    columns = {c["name"] for c in spec["versions"][0]["additionalPrinterColumns"]}
    assert {"Phase", "Step", "Challenger", "Decision", "Age"} <= columns
    assert spec["names"]["shortNames"] == ["mexp"]
    assert spec["versions"][0]["subresources"] == {"status": {}}


def test_list_map_keys_make_names_unique() -> None:
    challengers = schema()["properties"]["spec"]["properties"]["challengers"]
    assert challengers["x-kubernetes-list-type"] == "map"
    assert challengers["x-kubernetes-list-map-keys"] == ["name"]
    assert "x-kubernetes-list-type" not in challengers["items"]


def test_exclusive_bounds_use_openapi_v3_booleans() -> None:
    alpha = schema()["properties"]["spec"]["properties"]["analysis"]["properties"]["test"]["properties"][
        "alpha"
    ]
    assert alpha["minimum"] == 0 and alpha["exclusiveMinimum"] is True
    assert alpha["maximum"] == 1 and alpha["exclusiveMaximum"] is True


def test_render_is_deterministic_and_committed_files_are_current() -> None:
    text = crd.render()
    assert text == crd.render()
    assert yaml.safe_load(text) == crd.crd()
    for committed in ("crds/modelexperiment.yaml", "charts/arbiter/crds/modelexperiment.yaml"):
        assert (ROOT / committed).read_text() == text, f"{committed} is stale: run `make crds`"


def test_check_mode_reports_stale_file(tmp_path: Path) -> None:
    stale = tmp_path / "crd.yaml"
    stale.write_text("old")
    assert crd.main(["--check", str(stale)]) == 1
    assert crd.main(["--out", str(stale)]) == 0
    assert crd.main(["--check", str(stale)]) == 0


def test_nested_objects_with_defaults_default_to_empty_objects() -> None:
    """pydantic omits default_factory from JSON schema; without `default: {}` the API server would not
    fill in analysis.test.alpha and friends when the user leaves the whole block out."""
    spec = schema()["properties"]["spec"]["properties"]
    assert spec["decision"]["default"] == {}
    assert spec["analysis"]["properties"]["test"]["default"] == {}
    assert spec["analysis"]["properties"]["sampleRatioMismatch"]["default"] == {}
