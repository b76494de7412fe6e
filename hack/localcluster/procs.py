"""Start, identify and stop the background processes of the local cluster and Prometheus.

Every process is recorded in a pid file as ``<pid> <start time>``; the start time (field 22 of
/proc/<pid>/stat) makes sure we never signal an unrelated process that reused a pid.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

_PR_SET_PDEATHSIG = 1


def free_ports(count: int) -> list[int]:
    """Return ``count`` distinct free TCP ports on 127.0.0.1, picked by the kernel.

    All sockets are held open until every port is chosen, so the ports differ from each other.
    The kernel picks from the ephemeral range, which never includes well-known ports
    (2379, 6443, 9090, ...).
    """
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for sock in sockets:
            sock.close()


def port_is_free(port: int) -> bool:
    """Return True if nothing listens on 127.0.0.1:port and we could bind it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _die_with_parent() -> None:
    # Runs in the child between fork and exec: ask the kernel to SIGTERM the child when the
    # process that started it dies, so a killed pytest run leaves no control plane behind.
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """Return (state, start time in clock ticks) of a pid, or None if it does not exist."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name (field 2) may contain spaces and parentheses; fields after it are plain.
    rest = raw[raw.rindex(")") + 2 :].split()
    return rest[0], int(rest[19])


@dataclass(frozen=True)
class PidRecord:
    """One process we started: its name, pid and kernel start time."""

    name: str
    pid: int
    start_time: int

    def alive(self) -> bool:
        """Return True while this exact process (not a pid reuse) is running and not a zombie."""
        stat = _proc_stat(self.pid)
        if stat is None or stat[1] != self.start_time:
            return False
        if stat[0] == "Z":
            _reap(self.pid)
            return False
        return True


def _reap(pid: int) -> None:
    # Only our own children can be reaped; for anything else waitpid raises ChildProcessError.
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def spawn(
    name: str,
    argv: Sequence[str],
    *,
    log_path: Path,
    pid_path: Path,
    cwd: Path,
    die_with_parent: bool = False,
    env: dict[str, str] | None = None,
) -> tuple[subprocess.Popen[bytes], PidRecord]:
    """Start ``argv`` in its own session with output appended to ``log_path`` and record its pid.

    Args:
        name: short component name, used in the pid file and messages.
        argv: the command line.
        log_path: file that receives stdout and stderr.
        pid_path: file that receives ``<pid> <start time>``.
        cwd: working directory of the process.
        die_with_parent: SIGTERM the process when the current process exits (pytest uses this).
        env: environment; inherited when None.

    Returns:
        The Popen handle and the pid record written to ``pid_path``.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    pid_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=env,
            start_new_session=True,
            preexec_fn=_die_with_parent if die_with_parent else None,
        )
    stat = _proc_stat(proc.pid)
    record = PidRecord(name, proc.pid, stat[1] if stat else 0)
    pid_path.write_text(f"{record.pid} {record.start_time}\n")
    return proc, record


def read_pid_file(path: Path) -> PidRecord | None:
    """Read a pid file written by :func:`spawn`; None if it is missing or garbled."""
    try:
        pid_text, start_text = path.read_text().split()
        return PidRecord(path.stem, int(pid_text), int(start_text))
    except (FileNotFoundError, ValueError):
        return None


def _signal(record: PidRecord, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        # Each process leads its own session (start_new_session), so signal the whole group in
        # case it forked helpers; fall back to the pid if it is no longer a group leader.
        if os.getpgid(record.pid) == record.pid:
            os.killpg(record.pid, sig)
        else:
            os.kill(record.pid, sig)


def _wait_gone(records: Sequence[PidRecord], timeout: float) -> list[PidRecord]:
    deadline = time.monotonic() + timeout
    while True:
        remaining = [r for r in records if r.alive()]
        if not remaining or time.monotonic() >= deadline:
            return remaining
        time.sleep(0.05)


def stop(records: Sequence[PidRecord], timeout: float = 15.0) -> list[PidRecord]:
    """SIGTERM every live record, SIGKILL what is left after ``timeout``, wait until all are gone.

    Returns:
        The records that were alive and have been stopped.
    """
    live = [r for r in records if r.alive()]
    for record in live:
        _signal(record, signal.SIGTERM)
    stubborn = _wait_gone(live, timeout)
    for record in stubborn:
        _signal(record, signal.SIGKILL)
    still = _wait_gone(stubborn, 10.0)
    if still:
        names = ", ".join(f"{r.name} (pid {r.pid})" for r in still)
        raise RuntimeError(f"could not stop {names} even with SIGKILL")
    return live


def tail(path: Path, lines: int = 40) -> str:
    """Return the last ``lines`` lines of a log file (or a note that it is missing)."""
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 64 * 1024))
            text = f.read().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return f"(no log at {path})"
    return "\n".join(text.splitlines()[-lines:])
