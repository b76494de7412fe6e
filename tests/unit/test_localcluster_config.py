"""Pure parts of localcluster: component flags, node readiness, Prometheus config, wait_for."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from localcluster import cluster, procs
from localcluster.prometheus import ScrapeJob, render_config

from helpers import wait_for

WELL_KNOWN_PORTS = {2379, 2380, 6443, 8080, 9090, 10250, 10257, 10259, 10247}


def _commands(tmp_path: Path) -> tuple[dict[str, int], dict[str, list[str]]]:
    ports = dict(zip(cluster._PORT_NAMES, procs.free_ports(len(cluster._PORT_NAMES)), strict=True))
    return ports, cluster.commands(Path("/bin-dir"), cluster.Layout(tmp_path), ports)


def test_free_ports_are_distinct_and_not_well_known() -> None:
    ports = procs.free_ports(20)
    assert len(set(ports)) == 20
    assert not set(ports) & WELL_KNOWN_PORTS


def test_every_component_binds_loopback_on_the_ports_it_was_given(tmp_path: Path) -> None:
    ports, cmds = _commands(tmp_path)
    assert list(cmds) == list(cluster.COMPONENTS)
    flat = " ".join(arg for argv in cmds.values() for arg in argv)
    used = {int(p) for p in re.findall(r"127\.0\.0\.1:(\d+)", flat)}
    used |= {int(p) for p in re.findall(r"--(?:secure|node)-port=(\d+)", flat)}
    assert used == set(ports.values())
    for address in re.findall(r"--(?:bind|advertise)-address=(\S+)", flat):
        assert address == "127.0.0.1"


def test_controllers_run_without_leader_election_and_with_the_token_signing_key(tmp_path: Path) -> None:
    _, cmds = _commands(tmp_path)
    kcm = cmds["kube-controller-manager"]
    assert "--leader-elect=false" in kcm
    assert "--leader-elect=false" in cmds["kube-scheduler"]
    assert any(a.startswith("--service-account-private-key-file=") for a in kcm)
    assert any(a.startswith("--root-ca-file=") for a in kcm)
    api = cmds["kube-apiserver"]
    assert "--authorization-mode=RBAC" in api
    assert "--endpoint-reconciler-type=none" in api


def test_kwok_loads_every_stage_and_manages_only_fake_nodes(tmp_path: Path) -> None:
    _, cmds = _commands(tmp_path)
    configs = [a.removeprefix("--config=") for a in cmds["kwok"] if a.startswith("--config=")]
    assert [Path(c).name for c in configs] == list(cluster.binaries.KWOK_STAGES)
    assert "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake" in cmds["kwok"]


def test_extra_args_are_appended_to_the_right_component(tmp_path: Path) -> None:
    ports = dict(zip(cluster._PORT_NAMES, procs.free_ports(len(cluster._PORT_NAMES)), strict=True))
    cmds = cluster.commands(Path("/b"), cluster.Layout(tmp_path), ports, {"kube-apiserver": ["--v=4"]})
    assert cmds["kube-apiserver"][-1] == "--v=4"
    assert "--v=4" not in cmds["etcd"]


def test_fake_node_is_annotated_for_kwok_and_untainted() -> None:
    node = cluster.fake_node("kwok-node-3")
    assert node["metadata"]["annotations"]["kwok.x-k8s.io/node"] == "fake"
    assert "taints" not in node.get("spec", {})


@pytest.mark.parametrize(
    ("ready", "taints", "expected"),
    [
        ("True", [], True),
        ("False", [], False),
        ("True", [{"key": "node.kubernetes.io/not-ready", "effect": "NoSchedule"}], False),
        ("True", [{"key": "example.com/other", "effect": "NoSchedule"}], True),
    ],
)
def test_node_is_schedulable_once_ready_and_the_not_ready_taint_is_gone(
    ready: str, taints: list[dict[str, str]], expected: bool
) -> None:
    node = {"spec": {"taints": taints}, "status": {"conditions": [{"type": "Ready", "status": ready}]}}
    assert cluster.node_is_schedulable(node) is expected


def test_prometheus_config_has_one_job_per_target_set_with_its_own_interval() -> None:
    config = json.loads(
        render_config(
            [
                ScrapeJob("router", ("127.0.0.1:1234", "127.0.0.1:1235"), "1s"),
                ScrapeJob("model", ("127.0.0.1:2000",), "500ms", "/stats"),
            ]
        )
    )
    jobs = {j["job_name"]: j for j in config["scrape_configs"]}
    assert jobs["router"]["static_configs"] == [{"targets": ["127.0.0.1:1234", "127.0.0.1:1235"]}]
    assert jobs["model"]["metrics_path"] == "/stats"
    for job in jobs.values():
        # Prometheus rejects a scrape_timeout longer than scrape_interval.
        assert job["scrape_timeout"] == job["scrape_interval"]


def test_wait_for_returns_the_first_truthy_value() -> None:
    calls = iter([None, ValueError("not yet"), 0, "done"])

    def predicate() -> object:
        value = next(calls)
        if isinstance(value, Exception):
            raise value
        return value

    assert wait_for(predicate, timeout=5, interval=0) == "done"


def test_wait_for_reports_the_message_and_last_value_on_timeout() -> None:
    ready_replicas = {"count": 0}
    with pytest.raises(AssertionError, match=r"replicas never ready .*last value: 0"):
        wait_for(lambda: ready_replicas["count"], timeout=0.05, interval=0.01, message="replicas never ready")


def test_wait_for_reports_the_last_exception_on_timeout() -> None:
    def missing() -> None:
        raise LookupError("deployment web not found")

    with pytest.raises(AssertionError, match=r"deployment web not found"):
        wait_for(missing, timeout=0.05, interval=0.01)
