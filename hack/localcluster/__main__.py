"""Command line: ``python -m localcluster {up,down,status} --dir DIR``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if not __package__:
    # Run as a plain script (`python hack/localcluster/__main__.py down`): make the package importable.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from localcluster.cluster import ClusterError, down, running, up


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run one command; return the exit code."""
    parser = argparse.ArgumentParser(prog="python -m localcluster", description=__doc__)
    parser.add_argument("command", choices=["up", "down", "status"])
    parser.add_argument("--dir", default=".cluster", help="cluster directory (default: .cluster)")
    parser.add_argument("--nodes", type=int, default=1, help="number of fake kwok nodes (up only)")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for startup (up only)")
    args = parser.parse_args(argv)

    if args.command == "up":
        try:
            cluster = up(args.dir, nodes=args.nodes, timeout=args.timeout)
        except ClusterError as err:
            print(f"cluster-up failed: {err}", file=sys.stderr)
            return 1
        print(cluster.kubeconfig)
        return 0
    if args.command == "down":
        down(args.dir, log=print)  # stdout: the Makefile discards stderr of `down`
        return 0
    healthy = running(args.dir)
    if healthy is None:
        print(f"no healthy cluster in {Path(args.dir).resolve()}", file=sys.stderr)
        return 1
    print(f"server: {healthy.server}\nkubeconfig: {healthy.kubeconfig}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
