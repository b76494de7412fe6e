"""Arbiter's container image, built by hack/image.sh (`make image`) and run with podman.

The image runs the way the chart runs it: read-only root filesystem, the image's non-root user, a
writable /tmp (podman --read-only mounts a tmpfs there; the chart an emptyDir). With host networking the
container reaches the local control plane, Prometheus and the model servers on 127.0.0.1.

- what is in the image (and what is not: pyarrow, pip, compilers) and what .dockerignore lets in;
- the chart runs the image as the image expects (user, read-only root filesystem, /tmp);
- the router from the image serves and routes real HTTP model servers, and follows its routes file;
- the operator and the router from the image take a canary to a decision against the real API server
  and a real Prometheus.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml
from harness.env import RolloutEnv
from harness.experiment import conversion_metric, latency_guardrail, wait_for_phase
from harness.processes import ModelServerProcess, RouterProcess, http_json
from harness.traffic import TrafficGenerator

from arbiter.router.config import RouterConfig, Stickiness, Variant
from arbiter_fixtures import ROOT, OperatorProcess
from helpers import wait_for
from podman_image import PODMAN, ULIMITS, USER, ArbiterImage, container_name

# The first test to ask for the image may build it (a few minutes on a cold cache; `make test` builds
# it before pytest starts), so the bound includes one build.
pytestmark = [pytest.mark.image, pytest.mark.timeout(900)]

INSPECT = textwrap.dedent(
    """
    import importlib.util, json, os, shutil, sys
    def writable(path):
        try:
            with open(path, "w") as handle:
                handle.write("x")
        except OSError as err:
            return err.strerror
        os.remove(path)
        return "writable"
    print(json.dumps({
        "uid": os.getuid(),
        "gid": os.getgid(),
        "python": list(sys.version_info[:2]),
        "dont_write_bytecode": sys.flags.dont_write_bytecode,
        "tmpdir": os.environ.get("TMPDIR"),
        "modules": {m: importlib.util.find_spec(m) is not None for m in ("arbiter", "kopf", "pyarrow", "pip")},
        "programs": {p: shutil.which(p) for p in ("arbiter", "kubectl-arbiter", "gcc", "cc", "g++", "make", "pip")},
        "root_fs": writable("/opt/arbiter/probe"),
        "tmp": writable("/tmp/probe"),
    }))
    """
)


def serving(router: RouterProcess) -> dict[str, float]:
    """The weights in force that serve traffic (the router may list a variant at weight 0)."""
    return {name: weight for name, weight in router.weights().items() if weight}


def test_image_runs_as_non_root_on_a_read_only_root_without_pyarrow_pip_or_compilers(
    arbiter_image: ArbiterImage,
) -> None:
    result = arbiter_image.run(["-c", INSPECT], entrypoint="python3")
    assert result.returncode == 0, result.stderr
    facts = json.loads(result.stdout)
    assert (facts["uid"], facts["gid"]) == (10001, 10001)
    assert facts["python"] == [3, 11]
    assert facts["dont_write_bytecode"] == 1 and facts["tmpdir"] == "/tmp"
    assert facts["modules"] == {"arbiter": True, "kopf": True, "pyarrow": False, "pip": False}
    programs = facts["programs"]
    assert programs["arbiter"] == "/opt/arbiter/bin/arbiter" and programs["kubectl-arbiter"], programs
    assert [p for p in ("gcc", "cc", "g++", "make", "pip") if programs[p]] == [], programs
    assert facts["root_fs"] == "Read-only file system"
    assert facts["tmp"] == "writable"


def test_analyze_in_the_image_says_in_one_line_that_pyarrow_is_an_extra(arbiter_image: ArbiterImage) -> None:
    result = arbiter_image.run(["analyze", "/tmp/log.csv"])
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "arbiter analyze: error: reading files needs pyarrow, which is not installed: "
        "pip install 'arbiter[analyze]'"
    ]


def test_dockerignore_lets_only_the_sources_into_the_build_context(
    arbiter_image: ArbiterImage, tmp_path: Path
) -> None:
    """`podman build` with the repository's .dockerignore on a context holding what a checkout holds."""
    root = Path(__file__).resolve().parents[2]
    context = tmp_path / "context"
    files = [
        "pyproject.toml",
        "README.md",
        "operator/arbiter/module.py",
        "operator/arbiter/__pycache__/module.cpython-311.pyc",
        "operator/arbiter.egg-info/PKG-INFO",
        ".cluster/pki/ca.key",
        ".venv/bin/python",
        ".bench/e2e/result.json",
        ".demo/log",
        ".git/config",
        ".pytest_cache/v/cache",
        "hack/image.sh",
        "tests/conftest.py",
        "docs/router.md",
    ]
    for name in files:
        (context / name).parent.mkdir(parents=True, exist_ok=True)
        (context / name).write_text(name)
    (context / ".dockerignore").write_text((root / ".dockerignore").read_text())
    containerfile = tmp_path / "Containerfile"
    containerfile.write_text(f"FROM {arbiter_image.reference}\nCOPY . /context/\n")
    tag = f"localhost/arbiter-context-probe:{container_name('ctx').rsplit('-', 1)[1]}"
    build = subprocess.run(
        [
            *PODMAN,
            "build",
            "--isolation",
            "chroot",
            *ULIMITS,
            "-f",
            str(containerfile),
            "-t",
            tag,
            str(context),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    try:
        assert build.returncode == 0, build.stderr
        listing = subprocess.run(
            [
                *PODMAN,
                "run",
                "--rm",
                "--network",
                "none",
                "--user",
                USER,
                *ULIMITS,
                "--entrypoint",
                "find",
                tag,
                "/context",
                "-type",
                "f",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert listing.returncode == 0, listing.stderr
    finally:
        subprocess.run([*PODMAN, "rmi", "--force", tag], capture_output=True, timeout=60, check=False)
    sent = sorted(line.removeprefix("/context/") for line in listing.stdout.split())
    assert sent == ["operator/arbiter/module.py", "pyproject.toml"]


def test_the_chart_runs_the_image_the_way_these_tests_do(arbiter_image: ArbiterImage) -> None:
    """The chart runs the image as the image expects.

    Every container of the image the chart renders: non-root as the image's user, read-only root
    filesystem, /tmp an emptyDir (where the image points TMPDIR and HOME).
    """
    from localcluster import binaries

    repository, tag = arbiter_image.reference.rsplit(":", 1)
    rendered = subprocess.run(
        [
            str(binaries.ensure_built() / "helm"),
            "template",
            "arbiter",
            str(ROOT / "charts" / "arbiter"),
            "--namespace",
            "ops",
            "--kube-version",
            "1.36.3",
            "--set",
            f"image.repository={repository}",
            "--set",
            f"image.tag={tag}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "HELM_CACHE_HOME": "/tmp/arbiter-helm-cache"},
    )
    assert rendered.returncode == 0, rendered.stderr
    inspected = subprocess.run(
        [*PODMAN, "image", "inspect", "--format", "{{json .Config}}", arbiter_image.reference],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    config = json.loads(inspected.stdout)
    assert config["User"] == USER and config["Entrypoint"] == ["arbiter"], config
    assert {"TMPDIR=/tmp", "HOME=/tmp", "PYTHONDONTWRITEBYTECODE=1"} <= set(config["Env"]), config["Env"]

    pods = [
        doc["spec"]["template"]["spec"]
        for doc in yaml.safe_load_all(rendered.stdout)
        if doc and doc.get("kind") == "Deployment"
    ]
    containers = [
        (pod, container)
        for pod in pods
        for container in pod["containers"]
        if container["image"] == arbiter_image.reference
    ]
    assert containers, "the chart renders no container with the image"
    for pod, container in containers:
        security = {**pod.get("securityContext", {}), **container.get("securityContext", {})}
        assert security.get("runAsNonRoot") is True, security
        assert str(security.get("runAsUser")) == USER.split(":")[0], security
        assert security.get("readOnlyRootFilesystem") is True, security
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        tmp = [m for m in container.get("volumeMounts", []) if m["mountPath"] == "/tmp"]
        assert len(tmp) == 1 and "emptyDir" in volumes[tmp[0]["name"]], (container, volumes)


def test_router_from_the_image_serves_routes_and_follows_its_routes_file(
    arbiter_image: ArbiterImage, tmp_path: Path
) -> None:
    """Real model servers behind `arbiter router` from the image; a 70/30 split, sticky, then 0/100."""
    models = {
        name: ModelServerProcess.start(name, tmp_path, latency_ms=1, jitter_ms=0) for name in ("v1", "v2")
    }
    router: RouterProcess | None = None
    routes = tmp_path / "routes" / "routes.yaml"
    routes.parent.mkdir()

    def write_routes(weights: dict[str, float]) -> None:
        config = RouterConfig(
            experiment="image",
            variants=tuple(Variant(name=n, url=models[n].url, weight=w) for n, w in weights.items()),
            champion="v1",
            stickiness=Stickiness(header="x-user-id"),
        )
        staged = routes.with_suffix(".tmp")
        staged.write_text(config.to_yaml())
        staged.replace(routes)

    try:
        write_routes({"v1": 70, "v2": 30})
        router = RouterProcess.start(
            ["--config", str(routes), "--poll-interval", "0.2"], tmp_path, image=arbiter_image
        )
        assert router.container is not None
        wait_for(router.ready, timeout=30, message="the router's /readyz")
        assert serving(router) == {"v1": 70, "v2": 30}

        traffic = TrafficGenerator(router.url, rate=200, max_requests=400, max_seconds=60, seed=5).start()
        wait_for(lambda: not traffic.running, timeout=60, message="400 requests through the router")
        snapshot = traffic.stop()
        assert traffic.error is None
        assert snapshot.answered == 400, snapshot
        # 400 users split 70/30: the v2 share is 0.30 +- 0.023 (sd); 0.2..0.4 is more than 4 sd either way.
        assert 0.2 < snapshot.share("v2") < 0.4, snapshot
        assert sum(models[v].requests_served().get("200", 0) for v in models) >= 400

        # The same user always lands on the same variant.
        served = {
            http_json(router.url + "/predict", {"x": 1}, headers={"x-user-id": "user-42"})[1]["variant"]
            for _ in range(10)
        }
        assert len(served) == 1, served

        # The router watches its file through the read-only bind mount and follows a rewrite.
        write_routes({"v1": 0, "v2": 100})
        wait_for(lambda: serving(router) == {"v2": 100}, timeout=30, message="the new routes")
        answers = [
            http_json(router.url + "/predict", {"i": i}, headers={"x-user-id": f"u{i}"}) for i in range(20)
        ]
        assert {(status, body["variant"]) for status, body in answers} == {(200, "v2")}

        status, metrics = http_json(f"http://{router.metrics_address}/metrics")
        assert status == 200 and "arbiter_router_requests_total{" in metrics
        assert router.stop() == 0, router.log()[-3000:]
    finally:
        if router is not None:
            router.stop()
        for model in models.values():
            model.stop()


@pytest.mark.e2e
@pytest.mark.slow
def test_operator_and_router_from_the_image_promote_a_better_challenger(
    rollout_env: Any, image_operator: OperatorProcess, arbiter_image: ArbiterImage, kube_api: Any
) -> None:
    """The canary story of test_rollout_canary.py, with the operator and the router from the image."""
    env: RolloutEnv = rollout_env(experiment="image", router_image=arbiter_image)
    assert env.router is not None and env.router.container is not None
    assert image_operator.container is not None
    for container in (image_operator.container, env.router.container):
        inspected = subprocess.run(
            [*PODMAN, "inspect", "--format", "{{.HostConfig.ReadonlyRootfs}} {{.Config.User}}", container],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        assert inspected.stdout.split() == ["true", USER], inspected.stdout

    env.apply(
        [
            env.experiment(
                steps=[{"weight": 20, "minDuration": "3s"}, {"weight": 50, "minDuration": "3s"}],
                guardrails=[latency_guardrail(max_seconds=0.5)],
                primary=conversion_metric(mde=0.2),
            )
        ]
    )
    env.traffic({"v1": 0.10, "v2": 0.15}, rate=150, max_seconds=200, seed=11)
    promoted = wait_for_phase(
        kube_api,
        env.namespace,
        "image",
        "Promoted",
        timeout=180,
        forbid_phases={"RolledBack", "Concluded", "Failed", "Paused"},
    )
    decision = promoted["decision"]
    assert decision["outcome"] == "Promote" and decision.get("winner") == "v2", decision
    assert promoted["weights"] == {"v1": 0, "v2": 100}
    result = next(r for r in promoted["analysis"]["primary"]["results"] if r["variant"] == "v2")
    assert result["verdict"] == "Win" and result["pValue"] <= 0.05, result
    # The router in its container got the promotion from the ConfigMap the operator in its container wrote.
    wait_for(lambda: serving(env.router) == {"v2": 100}, timeout=30, message="the router to serve v2 only")
    # The operator's metrics endpoint in the container counted the decision.
    assert re.search(r'^arbiter_decisions_total\{outcome="Promote"\} [1-9]', image_operator.metrics(), re.M)
    image_operator.assert_alive()
