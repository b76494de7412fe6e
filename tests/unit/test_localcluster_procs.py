"""Process bookkeeping of localcluster, with real (cheap) processes: spawn, identify, stop."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from localcluster import procs

from helpers import wait_for


def _spawn(tmp_path: Path, name: str, argv: list[str], **kwargs: bool) -> procs.PidRecord:
    _, record = procs.spawn(
        name,
        argv,
        log_path=tmp_path / f"{name}.log",
        pid_path=tmp_path / f"{name}.pid",
        cwd=tmp_path,
        **kwargs,
    )
    return record


def test_spawn_records_a_pid_file_that_identifies_the_process(tmp_path: Path) -> None:
    record = _spawn(tmp_path, "sleeper", ["sleep", "300"])
    try:
        assert procs.read_pid_file(tmp_path / "sleeper.pid") == record
        assert record.alive()
        # Same pid, different start time: a recycled pid must never count as ours.
        assert not procs.PidRecord("sleeper", record.pid, record.start_time + 1).alive()
    finally:
        procs.stop([record])
    assert not record.alive()


def test_stop_kills_a_process_that_ignores_sigterm(tmp_path: Path) -> None:
    script = "trap '' TERM; echo trapped; while true; do sleep 0.1; done"
    record = _spawn(tmp_path, "stubborn", ["bash", "-c", script])
    wait_for(lambda: "trapped" in (tmp_path / "stubborn.log").read_text(), timeout=10, message="trap not set")

    stopped = procs.stop([record], timeout=0.5)

    assert stopped == [record]
    assert not record.alive()
    assert procs.stop([record]) == []


def test_output_goes_to_the_log_file(tmp_path: Path) -> None:
    record = _spawn(tmp_path, "talker", ["bash", "-c", "echo to-stdout; echo to-stderr >&2"])
    wait_for(lambda: not record.alive(), timeout=10, message="talker did not exit")

    assert procs.tail(tmp_path / "talker.log").splitlines() == ["to-stdout", "to-stderr"]


def test_children_die_with_the_process_that_started_them(tmp_path: Path) -> None:
    """A SIGKILLed pytest must not leave a control plane behind (PR_SET_PDEATHSIG)."""
    parent_code = textwrap.dedent(
        f"""
        import sys, time
        sys.path.insert(0, {str(Path(procs.__file__).parent.parent)!r})
        from pathlib import Path
        from localcluster import procs
        d = Path({str(tmp_path)!r})
        procs.spawn("orphan", ["sleep", "300"], log_path=d / "orphan.log", pid_path=d / "orphan.pid",
                    cwd=d, die_with_parent=True)
        print("spawned", flush=True)
        time.sleep(300)
        """
    )
    parent = subprocess.Popen([sys.executable, "-c", parent_code], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    assert parent.stdout.readline().strip() == "spawned"
    child = procs.read_pid_file(tmp_path / "orphan.pid")
    assert child is not None and child.alive()

    parent.kill()
    parent.wait()

    wait_for(lambda: not child.alive(), timeout=10, message=f"pid {child.pid} outlived its parent")


def test_free_port_is_reported_busy_while_something_listens() -> None:
    import socket

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        assert not procs.port_is_free(listener.getsockname()[1])
    assert procs.port_is_free(procs.free_ports(1)[0])


def test_pid_file_that_is_missing_or_garbled_reads_as_none(tmp_path: Path) -> None:
    (tmp_path / "bad.pid").write_text("not a pid\n")
    assert procs.read_pid_file(tmp_path / "bad.pid") is None
    assert procs.read_pid_file(tmp_path / "missing.pid") is None
