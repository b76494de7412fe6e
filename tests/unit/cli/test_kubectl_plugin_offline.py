"""`kubectl arbiter` without a cluster: usage errors, bad kubeconfigs and an unreachable server are one
line on stderr with exit code 3, never a traceback (the cluster cases are in tests/integration)."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import ProtocolError

from arbiter.cli.kubectl_plugin import EXIT_ERROR, _reconnecting, complete_main, main

PLUGIN = Path(sys.executable).with_name("kubectl-arbiter")


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(PLUGIN), *args], capture_output=True, text=True, timeout=60, env=env, check=False
    )


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == EXIT_ERROR, result
    assert "Traceback" not in result.stderr and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def test_usage_errors_are_one_line(tmp_path: Path) -> None:
    assert "invalid choice: 'bogus'" in one_line_error(run("bogus"))
    assert "invalid choice: 'csv'" in one_line_error(run("get", "-o", "csv"))
    assert "invalid duration" in one_line_error(run("get", "x", "-w", "--timeout", "soon"))


def test_kubeconfig_problems_are_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    assert (
        one_line_error(run("--kubeconfig", str(missing), "get"))
        == f"error: kubeconfig {missing} does not exist"
    )
    not_yaml = tmp_path / "not-yaml"
    not_yaml.write_text("clusters: [unclosed\n")
    assert "is not valid YAML" in one_line_error(run("get", "--kubeconfig", str(not_yaml)))
    text = tmp_path / "text"
    text.write_text("hello\n")
    assert "is not a kubeconfig" in one_line_error(run("status", "x", "--kubeconfig", str(text)))


def unreachable_kubeconfig(tmp_path: Path) -> Path:
    path = tmp_path / "kubeconfig"
    path.write_text(
        "apiVersion: v1\nkind: Config\n"
        'clusters: [{name: c, cluster: {server: "https://127.0.0.1:1"}}]\n'
        "users: [{name: u, user: {token: abc}}]\n"
        "contexts: [{name: x, context: {cluster: c, user: u, namespace: ml}}]\n"
        "current-context: x\n"
    )
    return path


@pytest.mark.parametrize(
    "args", [["get"], ["get", "x", "--watch"], ["status", "x"], ["abort", "x"], ["report", "x"]]
)
def test_an_unreachable_server_is_one_line(tmp_path: Path, args: list[str]) -> None:
    line = one_line_error(run(*args, "--kubeconfig", str(unreachable_kubeconfig(tmp_path))))
    assert line.startswith("error: cannot reach the API server at https://127.0.0.1:1: "), line


def test_an_unknown_context_is_one_line(tmp_path: Path) -> None:
    line = one_line_error(
        run("get", "--kubeconfig", str(unreachable_kubeconfig(tmp_path)), "--context", "nope")
    )
    assert line == f"error: context 'nope' not found in kubeconfig {unreachable_kubeconfig(tmp_path)}"


def test_version_plan_and_completion_need_no_cluster(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["version", "-o", "json"]) == 0
    assert '"version": "0.1.0"' in capsys.readouterr().out
    assert main(["plan", "--baseline", "0.1", "--mde", "0.1", "--json"]) == 0
    assert '"sample_size_per_variant"' in capsys.readouterr().out
    assert main(["completion", "bash"]) == 0
    assert "kubectl-arbiter" in capsys.readouterr().out


def test_kubectl_asks_the_plugin_for_completions(capsys: pytest.CaptureFixture[str]) -> None:
    """kubectl 1.26+ runs `kubectl_complete-arbiter ARGS... WORD` and reads one candidate a line + `:4`."""
    assert complete_main(["st"]) == 0
    assert capsys.readouterr().out.split() == ["status", ":4"]
    complete_main(["get", "--w"])
    assert capsys.readouterr().out.split() == ["--watch", ":4"]
    complete_main(["get", "-o", ""])
    assert capsys.readouterr().out.split() == ["wide", "json", "yaml", ":4"]


def updates_then(
    error: Exception | None, *batches: list[dict[str, object]]
) -> Iterator[list[dict[str, object]]]:
    yield from batches
    if error is not None:
        raise error


def test_a_watch_survives_a_lost_connection_once_it_was_connected() -> None:
    """The API server restarting under a long `--watch` (a CI job waiting on a rollout) is not the end."""
    lost = ProtocolError("Connection broken: IncompleteRead")
    opened = iter(
        [
            updates_then(lost, [{"n": 1}]),
            updates_then(ApiException(status=503), [{"n": 2}]),
            updates_then(None, [{"n": 3}], [{"n": 4}]),
        ]
    )
    pauses: list[float] = []
    seen = list(_reconnecting(lambda: next(opened), None, sleep=pauses.append))
    assert seen == [[{"n": 1}], [{"n": 2}], [{"n": 3}], [{"n": 4}]]
    assert pauses == [1.0, 1.0], "the pause starts over after every successful reconnection"


def test_a_watch_fails_fast_before_it_connected_and_on_errors_that_do_not_pass() -> None:
    never = ProtocolError("Connection refused")
    with pytest.raises(ProtocolError):
        list(_reconnecting(lambda: updates_then(never), None, sleep=lambda _: None))
    forbidden = iter([updates_then(ApiException(status=403), [{"n": 1}])])
    with pytest.raises(ApiException):
        list(_reconnecting(lambda: next(forbidden), None, sleep=lambda _: None))


def test_a_watch_gives_up_reconnecting_after_a_while_or_at_its_deadline() -> None:
    lost = ProtocolError("Connection broken")
    with pytest.raises(ProtocolError):
        list(
            _reconnecting(lambda: updates_then(lost, [{"n": 1}]), None, give_up_after=0, sleep=lambda _: None)
        )
    past = time.monotonic() - 1
    assert list(_reconnecting(lambda: updates_then(lost, [{"n": 1}]), past, sleep=lambda _: None)) == [
        [{"n": 1}]
    ]
