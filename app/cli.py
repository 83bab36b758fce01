"""The `lmc` command: gathers the subcommands each layer owns, each from that layer's `commands` module.

lmc_core (lmc_core/studies/commands.py): run, show, synthetic, presets; worker (worker/commands.py): worker;
the service (app/commands.py): up, token.
"""

from __future__ import annotations

import argparse
import sys

from app import commands as service_commands
from lmc_core import __version__
from lmc_core.studies import commands as core_commands
from worker import commands as worker_commands


def build_parser() -> argparse.ArgumentParser:
    """Return the `lmc` argument parser with every layer's subcommands."""
    parser = argparse.ArgumentParser(prog="lmc", description="LMC Lab: linear mode connectivity studies of sparse networks.")
    parser.add_argument("--version", action="version", version=f"lmc-lab {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    core_commands.register(sub)
    worker_commands.register(sub)
    service_commands.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the subcommand `argv` names and return its exit status."""
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
