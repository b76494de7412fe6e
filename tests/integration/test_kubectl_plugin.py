"""`kubectl arbiter` as kubectl runs it (a plugin found on PATH) against the real API server."""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from arbiter_fixtures import ROOT, experiment_docs
from helpers import wait_for

BIN = Path(sys.executable).parent


def kubectl(cluster: Any, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "KUBECONFIG": cluster.kubeconfig,
    }
    result = subprocess.run(
        [str(BIN / "kubectl"), *args], capture_output=True, text=True, env=env, timeout=60, check=False
    )
    if check and result.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)} failed: {result.stderr}")
    return result


def create_experiment(
    cluster: Any,
    namespace: str,
    status: dict[str, Any] | None = None,
    name: str = "plugin-probe",
    challengers: list[str] | None = None,
) -> str:
    doc = copy.deepcopy(
        next(d for d in experiment_docs(ROOT / "examples" / "canary.yaml") if d["kind"] == "ModelExperiment")
    )
    doc["metadata"] = {"name": name, "namespace": namespace}
    if challengers:
        doc["spec"]["challengers"] = [
            {"name": c, "deployment": f"fraud-{c}", "service": f"fraud-{c}"} for c in challengers
        ]
    cluster.kubectl("create", "-f", "-", input=yaml.safe_dump(doc))
    if status:
        set_status(cluster, namespace, name, status)
    return name


def set_status(cluster: Any, namespace: str, name: str, status: dict[str, Any]) -> None:
    """Merge ``status`` into the experiment's status, as the operator would write it."""
    cluster.kubectl(
        "patch",
        "mexp",
        name,
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": status}),
    )


def stored(cluster: Any, namespace: str, name: str) -> dict[str, Any]:
    return json.loads(cluster.kubectl("get", "mexp", name, "-n", namespace, "-o", "json").stdout)


def test_get_and_status_explain_the_experiment(cluster: Any, arbiter_crd: str, namespace: str) -> None:
    name = create_experiment(
        cluster,
        namespace,
        {
            "phase": "Progressing",
            "currentStep": 1,
            "weights": {"v1": 75, "v2": 25},
            "decision": {"outcome": "Hold", "reason": "step 1 held: 12s of 600s"},
            "history": [
                {
                    "time": "2026-01-01T00:00:00Z",
                    "from": "Progressing(step 0)",
                    "to": "Progressing(step 1)",
                    "reason": "step 0 passed",
                }
            ],
        },
    )
    listing = kubectl(cluster, "arbiter", "get", "-n", namespace).stdout.splitlines()
    assert listing[0].split() == ["NAME", "MODE", "PHASE", "STEP", "WEIGHTS", "DECISION"]
    assert listing[1].split() == [name, "Canary", "Progressing", "1", "v1=75,v2=25", "Hold"]
    explained = kubectl(cluster, "arbiter", "status", name, "-n", namespace).stdout
    assert "Phase:      Progressing" in explained and "v2 25%" in explained
    assert "Decision:   Hold: step 1 held: 12s of 600s" in explained
    assert "Progressing(step 0) -> Progressing(step 1): step 0 passed" in explained


def test_actions_write_the_documented_annotations(cluster: Any, arbiter_crd: str, namespace: str) -> None:
    name = create_experiment(cluster, namespace, status={"phase": "Progressing"})
    kubectl(cluster, "arbiter", "abort", name, "-n", namespace)
    first = stored(cluster, namespace, name)["metadata"]["annotations"]["arbiter.dev/abort"]
    kubectl(cluster, "arbiter", "abort", name, "-n", namespace)
    second = stored(cluster, namespace, name)["metadata"]["annotations"]["arbiter.dev/abort"]
    assert first != second, "every request carries a fresh value, so the operator acts on each"
    kubectl(cluster, "arbiter", "promote", name, "-n", namespace, "--variant", "v2")
    assert stored(cluster, namespace, name)["metadata"]["annotations"]["arbiter.dev/promote"] == "v2"
    kubectl(cluster, "arbiter", "pause", name, "-n", namespace)
    assert stored(cluster, namespace, name)["spec"]["paused"] is True
    kubectl(cluster, "arbiter", "unpause", name, "-n", namespace)
    assert stored(cluster, namespace, name)["spec"]["paused"] is False


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    """The single stderr line of a failed plugin run (exit code 3, nothing on stdout, no traceback)."""
    assert result.returncode == 3, result
    assert "Traceback" not in result.stderr and result.stdout == "", result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def test_a_missing_experiment_is_a_one_line_error(cluster: Any, arbiter_crd: str, namespace: str) -> None:
    for command in (["status"], ["get"], ["get", "--watch"], ["abort"], ["promote"], ["pause"]):
        result = kubectl(cluster, "arbiter", *command, "nope", "-n", namespace, check=False)
        assert one_line_error(result) == f"error: modelexperiment {namespace}/nope not found", command


PRIMARY_RESULT = {
    "variant": "v2",
    "verdict": "Inconclusive",
    "nControl": 1200,
    "nTreatment": 400,
    "controlValue": 0.1,
    "treatmentValue": 0.13,
    "absoluteDifference": 0.03,
    "relativeLift": 0.3,
    "ciLow": -0.005,
    "ciHigh": 0.065,
    "pValue": 0.09,
    "pValueAdjusted": 0.09,
}


def test_status_shows_the_confidence_interval_and_get_o_wide_the_leader(
    cluster: Any, arbiter_crd: str, namespace: str
) -> None:
    long_name = "a-much-longer-experiment-name-than-usual-for-column-widths"
    create_experiment(cluster, namespace, name="short", status={"phase": "Pending"})
    create_experiment(
        cluster,
        namespace,
        name=long_name,
        status={
            "phase": "Progressing",
            "currentStep": 0,
            "weights": {"v1": 95, "v2": 5},
            "analysis": {
                "primary": {"metric": "conversion", "method": "Sequential", "results": [PRIMARY_RESULT]},
                "srm": {"method": "Sequential", "pValue": 0.7, "mismatch": False},
            },
            "leading": {"variant": "v2", "relativeLift": 0.3, "pValue": 0.09},
            "forecast": {
                "variant": "v2",
                "method": "Sequential",
                "secondsToDecision": 10800.0,
                "decisionIn": "~3h",
                "samplesControl": 9000.0,
                "samplesTreatment": 500.0,
                "conditionalPower": 0.7,
                "summary": "at this traffic a decision is expected in ~3h (if the true effect is the MDE); "
                "if the true lift is the observed one, P(win) = 0.70",
            },
        },
    )
    explained = kubectl(cluster, "arbiter", "status", long_name, "-n", namespace).stdout
    row = next(
        line for line in explained.splitlines() if line.startswith("v2 ") and "%" in line and "[" in line
    )
    assert row.split() == ["v2", "+30.0%", "+0.03", "[-0.005,", "+0.065]", "0.09", "0.09", "Inconclusive"]
    assert "Sample ratio (Sequential): p = 0.7" in explained
    assert (
        "Forecast (v2): at this traffic a decision is expected in ~3h (if the true effect is the MDE); "
        "if the true lift is the observed one, P(win) = 0.70 [500 more v2 and 9000 more champion samples]"
    ) in explained, explained

    wide = kubectl(cluster, "arbiter", "get", "-n", namespace, "-o", "wide").stdout.splitlines()
    assert wide[0].split() == [
        "NAME", "MODE", "PHASE", "STEP", "WEIGHTS", "DECISION", "LEADER", "LIFT", "P-VALUE", "DECIDE-IN",
        "P(WIN)", "SAMPLES", "AGE"
    ]  # fmt: skip
    rows = {line.split()[0]: line for line in wide[1:]}
    assert rows[long_name].split()[1:12] == [
        "Canary", "Progressing", "0", "v1=95,v2=5", "-", "v2", "+30.0%", "0.09", "~3h", "0.7", "v1=1200,v2=400"
    ]  # fmt: skip
    # Every column starts at the same offset on every line, whatever the length of the names.
    assert {line.index("Canary") for line in wide[1:]} == {wide[0].index("MODE")}

    as_json = json.loads(kubectl(cluster, "arbiter", "get", long_name, "-n", namespace, "-o", "json").stdout)
    assert as_json["status"]["leading"]["relativeLift"] == 0.3
    listed = yaml.safe_load(kubectl(cluster, "arbiter", "get", "-n", namespace, "-o", "yaml").stdout)
    assert sorted(i["metadata"]["name"] for i in listed["items"]) == sorted([long_name, "short"])

    # The printer columns of the CRD: `kubectl get mexp -o wide` shows the same leader, lift and p-value.
    plain = kubectl(cluster, "get", "mexp", long_name, "-n", namespace).stdout.splitlines()
    assert "LIFT" not in plain[0], "the statistics are -o wide columns (priority 1)"
    table = kubectl(cluster, "get", "mexp", long_name, "-n", namespace, "-o", "wide").stdout.splitlines()
    assert table[0].split()[-5:] == ["LEADER", "LIFT", "P-VALUE", "DECIDE-IN", "P-WIN"]
    assert table[1].split()[-5:] == ["v2", "0.3", "0.09", "~3h", "0.7"]


def test_context_and_kubeconfig_flags_choose_the_cluster_and_namespace(
    cluster: Any, arbiter_crd: str, namespace: str, tmp_path: Path
) -> None:
    """A copy of the kubeconfig with a second context whose namespace is the test's: no -n needed."""
    create_experiment(cluster, namespace, status={"phase": "Progressing", "weights": {"v1": 90, "v2": 10}})
    config = yaml.safe_load(Path(cluster.kubeconfig).read_text())
    current = next(c for c in config["contexts"] if c["name"] == config["current-context"])
    config["contexts"].append({"name": "probe", "context": {**current["context"], "namespace": namespace}})
    copied = tmp_path / "kubeconfig"
    copied.write_text(yaml.safe_dump(config))
    env = {**os.environ, "KUBECONFIG": "/nonexistent"}
    result = subprocess.run(
        [str(BIN / "kubectl-arbiter"), "get", "--kubeconfig", str(copied), "--context", "probe"],
        capture_output=True, text=True, env=env, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[1].split()[:3] == ["plugin-probe", "Canary", "Progressing"]
    # Flags before the command work too, as with kubectl.
    result = subprocess.run(
        [str(BIN / "kubectl-arbiter"), "--kubeconfig", str(copied), "--context", "probe", "status", "plugin-probe"],
        capture_output=True, text=True, env=env, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0 and f"{namespace}/plugin-probe" in result.stdout, result.stderr


def test_actions_that_do_not_apply_to_the_phase_are_refused(
    cluster: Any, arbiter_crd: str, namespace: str
) -> None:
    name = create_experiment(cluster, namespace, status={"phase": "RolledBack"})
    for action, expected in (
        ("promote", "it is RolledBack (promote applies while it is Paused or Progressing)"),
        ("abort", "it is RolledBack (abort applies while it is Paused or Progressing)"),
        ("resume", "it is RolledBack (resume applies to a Paused experiment)"),
        ("pause", "it is RolledBack (pause applies while it is Paused or Pending or Progressing)"),
    ):
        line = one_line_error(kubectl(cluster, "arbiter", action, name, "-n", namespace, check=False))
        assert line == f"error: cannot {action} modelexperiment {namespace}/{name}: {expected}"
    assert "arbiter.dev/promote" not in (
        stored(cluster, namespace, name)["metadata"].get("annotations") or {}
    )
    kubectl(cluster, "arbiter", "retry", name, "-n", namespace)  # applies after a rollback

    set_status(cluster, namespace, name, {"phase": "Progressing"})
    line = one_line_error(kubectl(cluster, "arbiter", "retry", name, "-n", namespace, check=False))
    assert line.endswith("it is Progressing (retry applies after a rollback or conclusion)")
    line = one_line_error(kubectl(cluster, "arbiter", "unpause", name, "-n", namespace, check=False))
    assert line == f"error: modelexperiment {namespace}/{name} is already unpaused"

    several = create_experiment(
        cluster, namespace, name="several", challengers=["v2", "v3"], status={"phase": "Progressing"}
    )
    line = one_line_error(kubectl(cluster, "arbiter", "promote", several, "-n", namespace, check=False))
    assert line == "error: several has several challengers: name one with --variant (v2, v3)"
    line = one_line_error(
        kubectl(cluster, "arbiter", "promote", several, "-n", namespace, "--variant", "v9", check=False)
    )
    assert line == "error: --variant v9 is not a challenger of several (v2, v3)"


def start_watch(cluster: Any, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "KUBECONFIG": cluster.kubeconfig}
    return subprocess.Popen(
        [str(BIN / "kubectl-arbiter"), "get", *args, "--watch"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def first_frame(process: subprocess.Popen[str]) -> str:
    """Lines up to the end of the first frame (the Decision line), read as the watch prints them."""
    assert process.stdout is not None
    lines = []
    for line in process.stdout:
        lines.append(line)
        if line.startswith("Decision:"):
            return "".join(lines)
    raise AssertionError(
        f"the watch ended before a frame: {''.join(lines)} {process.stderr and process.stderr.read()}"
    )


@pytest.mark.parametrize(
    ("phase", "code"), [("Promoted", 0), ("RolledBack", 1), ("Concluded", 2), ("Failed", 4)]
)
def test_watch_exits_when_the_experiment_is_decided_with_a_code_that_says_how(
    cluster: Any, arbiter_crd: str, namespace: str, phase: str, code: int
) -> None:
    name = create_experiment(
        cluster,
        namespace,
        status={"phase": "Progressing", "currentStep": 0, "weights": {"v1": 95, "v2": 5}},
    )
    watch = start_watch(cluster, name, "-n", namespace)
    try:
        frame = first_frame(watch)
        assert "Phase:      Progressing" in frame and "v1 95%, v2 5%" in frame
        set_status(cluster, namespace, name, {"currentStep": 1, "weights": {"v1": 75, "v2": 25}})
        set_status(
            cluster,
            namespace,
            name,
            {"phase": phase, "decision": {"outcome": "X", "reason": f"decided: {phase} for the test"}},
        )
        out, err = watch.communicate(timeout=60)
    finally:
        watch.kill()
    assert watch.returncode == code, (out, err)
    # Not a terminal: every change is appended as a new frame under a timestamp, the last one decided.
    frames = out.split("--- ")
    assert len(frames) >= 2 and "v1 75%, v2 25%" in out
    assert f"Phase:      {phase}" in frames[-1] and f"decided: {phase} for the test" in frames[-1]
    assert err == ""


def test_watch_of_a_deleted_experiment_and_a_timeout_are_errors(
    cluster: Any, arbiter_crd: str, namespace: str
) -> None:
    name = create_experiment(cluster, namespace, status={"phase": "Progressing"})
    watch = start_watch(cluster, name, "-n", namespace)
    try:
        first_frame(watch)
        cluster.kubectl("delete", "mexp", name, "-n", namespace, "--wait=false")
        _, err = watch.communicate(timeout=60)
    finally:
        watch.kill()
    assert watch.returncode == 3 and err.strip() == f"error: modelexperiment {namespace}/{name} was deleted"

    name = create_experiment(cluster, namespace, name="slow", status={"phase": "Progressing"})
    timed = kubectl(
        cluster, "arbiter", "get", name, "-n", namespace, "--watch", "--timeout", "2s", check=False
    )
    assert timed.returncode == 5 and timed.stderr.strip() == "error: not decided within 2s", timed


def test_a_closed_pipe_ends_the_watch_quietly(cluster: Any, arbiter_crd: str, namespace: str) -> None:
    """`kubectl arbiter get NAME -w | head -3`: once head is gone the next frame ends the plugin, silently."""
    name = create_experiment(
        cluster, namespace, status={"phase": "Progressing", "weights": {"v1": 90, "v2": 10}}
    )
    env = {**os.environ, "KUBECONFIG": cluster.kubeconfig, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    pipeline = subprocess.Popen(
        [
            "bash",
            "-c",
            f'kubectl-arbiter get {name} -n {namespace} --watch | head -3; echo "exit=${{PIPESTATUS[0]}}"',
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert pipeline.stdout is not None
        head = [pipeline.stdout.readline() for _ in range(3)]
        assert head[1].startswith("Name:"), head
        set_status(cluster, namespace, name, {"weights": {"v1": 50, "v2": 50}})  # a new frame to write
        out, err = pipeline.communicate(timeout=60)
    finally:
        pipeline.kill()
    assert out.strip() == "exit=141", (out, err)
    assert err == "", "no traceback, no message: the reader simply went away"


@pytest.mark.parametrize("rows", [60, 12], ids=["frame-fits", "frame-taller-than-the-terminal"])
def test_watch_redraws_in_place_on_a_terminal(
    cluster: Any, arbiter_crd: str, namespace: str, rows: int
) -> None:
    """In a terminal (tmux), the frame is redrawn where it was: the screen shows one frame, the latest.

    With a frame taller than the terminal the cursor stops at the top row, and clearing from there
    still leaves nothing of the old frame on the screen.
    """
    name = create_experiment(
        cluster,
        namespace,
        status={"phase": "Progressing", "decision": {"outcome": "Hold", "reason": "first look"}},
    )
    tmux = ["tmux", "-L", f"arbiter-{namespace}"[:60]]  # a server of its own: never the user's sessions
    command = (
        f"KUBECONFIG={cluster.kubeconfig} {BIN / 'kubectl-arbiter'} get {name} -n {namespace} --watch; "
        "echo EXIT=$?; sleep 600"
    )
    subprocess.run(
        [*tmux, "new-session", "-d", "-s", "watch", "-x", "160", "-y", str(rows), command],
        check=True,
        timeout=30,
    )

    def screen() -> str:
        return subprocess.run(
            [*tmux, "capture-pane", "-p", "-t", "watch"],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        ).stdout

    try:
        wait_for(lambda: "first look" in screen(), timeout=30, message="the first frame")
        for look in ("second look", "third look"):
            set_status(cluster, namespace, name, {"decision": {"outcome": "Hold", "reason": look}})
            wait_for(lambda look=look: look in screen(), timeout=30, message=f"the frame of the {look}")
            shown = screen()
            assert shown.count("Decision:") == 1 and shown.count("watching;") == 1, shown
            assert "first look" not in shown and (look == "second look" or "second look" not in shown), shown
        set_status(cluster, namespace, name, {"phase": "Promoted"})
        wait_for(lambda: "EXIT=0" in screen(), timeout=30, message="the watch to exit 0 on Promoted")
        assert screen().count("Decision:") == 1
    finally:
        subprocess.run([*tmux, "kill-server"], check=False, timeout=30)


def test_watching_a_namespace_shows_new_experiments_and_ctrl_c_ends_it_quietly(
    cluster: Any, arbiter_crd: str, namespace: str
) -> None:
    create_experiment(cluster, namespace, name="first", status={"phase": "Progressing"})
    watch = start_watch(cluster, "-n", namespace, "-o", "wide")
    try:
        assert watch.stdout is not None
        header = watch.stdout.readline() + watch.stdout.readline()
        assert "NAME" in header and "LEADER" in header, header
        create_experiment(cluster, namespace, name="second", status={"phase": "Pending"})
        wait_for(
            lambda: watch.stdout is not None and watch.stdout.readline().startswith("second"),
            timeout=30,
            message="the new experiment to appear in the watched table",
        )
        watch.send_signal(signal.SIGINT)
        _, err = watch.communicate(timeout=30)
    finally:
        watch.kill()
    assert watch.returncode == 130 and "Traceback" not in err and err.strip() == "", err


def test_status_prints_the_object_as_json_or_yaml(cluster: Any, arbiter_crd: str, namespace: str) -> None:
    name = create_experiment(cluster, namespace, status={"phase": "Progressing", "currentStep": 0})
    as_yaml = yaml.safe_load(
        kubectl(cluster, "arbiter", "status", name, "-n", namespace, "-o", "yaml").stdout
    )
    as_json = json.loads(kubectl(cluster, "arbiter", "status", name, "-n", namespace, "-o", "json").stdout)
    assert as_yaml == as_json and as_json["status"]["phase"] == "Progressing"
