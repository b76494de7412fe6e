"""Arbiter's container image in tests: built once by hack/image.sh, run with podman.

The image is built by the same script as `make image` (cached by a hash of its inputs, so a session
with unchanged sources builds nothing) and run the way shared/notes/containers.md says works on these
machines: runc, cgroupfs, lowered ulimits, host networking (the container reaches the local control
plane, Prometheus and the model servers on 127.0.0.1, and the tests reach its ports there), a read-only
root filesystem and the image's non-root user.
"""

from __future__ import annotations

import shutil
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
IMAGE_SCRIPT = ROOT / "hack" / "image.sh"
PODMAN = ["podman", "--runtime", "runc", "--cgroup-manager", "cgroupfs"]
ULIMITS = ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1000:1000"]
USER = "10001:10001"  # the image's `arbiter` user
KUBECONFIG_IN_CONTAINER = "/etc/arbiter/kubeconfig"


class ImageBuildError(Exception):
    """hack/image.sh failed; the message carries its output's tail."""


def build_image(timeout: float = 1200) -> str:
    """Build the image if the sources changed (else a no-op) and return its reference."""
    result = subprocess.run(
        [str(IMAGE_SCRIPT)], capture_output=True, text=True, timeout=timeout, check=False, cwd=ROOT
    )
    lines = result.stdout.split()
    if result.returncode != 0 or not lines:
        raise ImageBuildError(
            f"{IMAGE_SCRIPT.name} exited with {result.returncode}:\n{result.stderr[-4000:]}"
        )
    return lines[-1]


def readable_copy(path: str | Path, directory: Path, name: str) -> Path:
    """A copy of ``path`` called ``NAME.kubeconfig`` in ``directory``, readable by the container's user.

    Kubeconfigs are written 0600 for root and a bind mount keeps the host's owner and mode. One copy
    per container, so that no container reads a file while another one's copy is being written.
    """
    copy = directory / f"{name}.kubeconfig"
    shutil.copyfile(path, copy)
    copy.chmod(0o644)
    return copy


@dataclass(frozen=True)
class ArbiterImage:
    """The built image, and how to run `arbiter ...` from it."""

    reference: str

    def command(
        self,
        args: list[str],
        *,
        name: str,
        env: dict[str, str] | None = None,
        kubeconfig: str | Path | None = None,
        read_only_dirs: tuple[str | Path, ...] = (),
        network: str = "host",
        entrypoint: str | None = None,
    ) -> list[str]:
        """The podman command line that runs ``arbiter ARGS`` in a container called ``name``.

        Args:
            args: the arguments of the entrypoint ``arbiter``.
            name: the container's name (to stop or kill it by name).
            env: environment variables for the process.
            kubeconfig: a kubeconfig readable by the container's user (see :func:`readable_copy`),
                mounted read-only and named by ``KUBECONFIG``.
            read_only_dirs: host directories mounted read-only at the same path (e.g. a routes file's).
            network: ``host``, or ``none`` for a command that needs no network.
            entrypoint: another program than ``arbiter`` (to look inside the image).
        """
        argv = [*PODMAN, "run", "--rm", "--name", name, "--network", network, "--read-only", "--user", USER]
        argv += ULIMITS
        if entrypoint is not None:
            argv += ["--entrypoint", entrypoint]
        environment = dict(env or {})
        if kubeconfig is not None:
            argv += ["--volume", f"{kubeconfig}:{KUBECONFIG_IN_CONTAINER}:ro"]
            environment["KUBECONFIG"] = KUBECONFIG_IN_CONTAINER
        for directory in read_only_dirs:
            argv += ["--volume", f"{directory}:{directory}:ro"]
        for key, value in environment.items():
            argv += ["--env", f"{key}={value}"]
        return [*argv, self.reference, *args]

    def run(
        self, args: list[str], *, entrypoint: str | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """Run ``arbiter ARGS`` (or ``ENTRYPOINT ARGS``) to completion the same way, without a network."""
        argv = self.command(args, name=container_name("oneshot"), network="none", entrypoint=entrypoint)
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)


def container_name(role: str) -> str:
    """A unique container name, so parallel tests never collide."""
    return f"arbiter-test-{role}-{uuid.uuid4().hex[:8]}"


def kill_container(name: str, signal: str = "KILL") -> None:
    """Send ``signal`` to the container's process (a SIGKILL of `podman run` would leave it running)."""
    subprocess.run([*PODMAN, "kill", "--signal", signal, name], capture_output=True, timeout=30, check=False)


def remove_container(name: str) -> None:
    """Remove the container if it is still there (it normally removes itself: --rm)."""
    subprocess.run([*PODMAN, "rm", "--force", "--ignore", name], capture_output=True, timeout=60, check=False)
