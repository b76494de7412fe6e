"""The `arbiter` command line.

Every module in this package that defines ``register(subparsers)`` adds one
subcommand, so commands are added without editing a central list. Modules keep
their heavy imports inside the command function so `arbiter plan` never loads
kopf or the Kubernetes client.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from collections.abc import Sequence


def build_parser() -> argparse.ArgumentParser:
    """Build the top-level parser with one subparser per command module."""
    parser = argparse.ArgumentParser(
        prog="arbiter",
        description="Arbiter: canary, shadow and A/B/n rollouts of ML models, decided by statistics.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the `arbiter` command line and return its exit code.

    Each subcommand sets ``func`` on its parser; it returns an exit code.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    code = args.func(args)
    return int(code or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
