"""hack/image.sh --tag: the image's tag is a hash of exactly what goes into the image.

The script runs on a copy of its inputs (it works from the directory above its own), so the test can
change files without touching the checkout. Nothing is built.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
INPUTS = ["operator/Dockerfile", ".dockerignore", "pyproject.toml", "hack/image.sh"]


def tag(repo: Path) -> str:
    result = subprocess.run(
        [str(repo / "hack" / "image.sh"), "--tag"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env={"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": str(repo)},
    )
    return result.stdout.strip()


def test_the_tag_changes_with_the_sources_and_not_with_caches_or_other_files(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    for name in INPUTS:
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, repo / name)
    package = repo / "operator" / "arbiter"
    package.mkdir(parents=True, exist_ok=True)
    (package / "__init__.py").write_text('"""Arbiter."""\n')

    first = tag(repo)
    assert first.startswith("localhost/arbiter:") and len(first.split(":")[1]) == 16, first
    assert tag(repo) == first, "the same sources give the same tag"

    # Not inputs: bytecode caches, egg-info, tests, docs (the image gets an empty README.md).
    (package / "__pycache__").mkdir()
    (package / "__pycache__" / "__init__.cpython-311.pyc").write_bytes(b"\0")
    (repo / "operator" / "arbiter.egg-info").mkdir()
    (repo / "operator" / "arbiter.egg-info" / "PKG-INFO").write_text("x")
    (repo / "tests").mkdir()
    (repo / "tests" / "test_x.py").write_text("x")
    (repo / "README.md").write_text("# Arbiter, edited")
    assert tag(repo) == first

    # Inputs: a source file, pyproject.toml, the Containerfile.
    (package / "module.py").write_text("X = 1\n")
    second = tag(repo)
    assert second != first
    (repo / "pyproject.toml").write_text((repo / "pyproject.toml").read_text() + "\n# changed\n")
    third = tag(repo)
    assert third not in (first, second)
    (repo / "operator" / "Dockerfile").write_text((repo / "operator" / "Dockerfile").read_text() + "\n")
    assert tag(repo) not in (first, second, third)
