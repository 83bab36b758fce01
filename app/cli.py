"""The `lmc` command: gathers the subcommands each layer owns (lmc_core: run, show, presets; worker: worker; app: up, token)."""

from __future__ import annotations

import argparse
import sys

from lmc_core import __version__
from lmc_core.studies import commands as core_cli
from worker import cli as worker_cli

from app import token_cli, up


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lmc", description="LMC Lab: linear mode connectivity studies of sparse networks.")
    parser.add_argument("--version", action="version", version=f"lmc-lab {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    core_cli.register(sub)
    worker_cli.register(sub)
    token_cli.register(sub)
    up.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
