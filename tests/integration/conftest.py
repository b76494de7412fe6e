"""Fixtures for integration tests: third-party CRDs (Gateway API, Istio, prometheus-operator) on the real API server.

- ``thirdparty_crds`` (session): runs hack/thirdparty-crds.sh (the CRDs come from the Go modules at
  the versions pinned in hack/versions.env, cached under ~/.cache/arbiter/thirdparty), applies them
  server-side (Istio's file is too large for client-side apply's annotation) and waits until every
  CRD is Established. Returns the applied CRD names.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import yaml

if TYPE_CHECKING:
    from localcluster import Cluster

ROOT = Path(__file__).resolve().parents[2]
THIRDPARTY_SCRIPT = ROOT / "hack" / "thirdparty-crds.sh"


def thirdparty_crd_files() -> list[Path]:
    """Fetch (or reuse the cached) third-party CRD files; their paths, one per YAML file."""
    result = subprocess.run(
        [str(THIRDPARTY_SCRIPT)], capture_output=True, text=True, timeout=600, check=False
    )
    if result.returncode != 0:
        pytest.fail(f"{THIRDPARTY_SCRIPT.name} failed:\n{result.stderr}", pytrace=False)
    return [Path(line) for line in result.stdout.splitlines() if line.strip()]


def crd_names(path: Path) -> list[str]:
    """The names of the CustomResourceDefinitions in a YAML file."""
    with path.open(encoding="utf-8") as handle:
        return [
            doc["metadata"]["name"]
            for doc in yaml.safe_load_all(handle)
            if isinstance(doc, dict) and doc.get("kind") == "CustomResourceDefinition"
        ]


@pytest.fixture(scope="session")
def thirdparty_crds(cluster: Cluster) -> list[str]:
    """Gateway API (standard channel), Istio and prometheus-operator CRDs, installed and Established for the session."""
    names: list[str] = []
    for path in thirdparty_crd_files():
        cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(path), timeout=300)
        names += crd_names(path)
    assert names, "hack/thirdparty-crds.sh produced no CRDs"
    cluster.kubectl(
        "wait", "--for=condition=Established", "--timeout=120s", *(f"crd/{n}" for n in names), timeout=180
    )
    return names
