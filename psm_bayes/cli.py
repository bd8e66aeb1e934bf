"""The ``psm-bayes`` command line.

Each subcommand lives in its own module, which exposes
``register(subparsers)``; this file only assembles them, so importing the CLI
stays cheap (heavy libraries load inside the command that needs them).
"""

from __future__ import annotations

import argparse
import importlib
import sys

# subcommand modules, in the order they appear in --help
_COMMAND_MODULES: tuple[str, ...] = (
    "psm_bayes.commands.core",   # simulate, fit, diagnose
    "psm_bayes.llm.commands",    # score
    "psm_bayes.experiments.commands",  # run
    "psm_bayes.study.commands",  # study, sbc
)


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (one subparser per command)."""
    parser = argparse.ArgumentParser(prog="psm-bayes", description="Bayesian persona-selection models.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in _COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as err:  # a command whose module is not built yet
            if err.name and name.startswith(err.name):
                continue
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point: parse ``argv`` and run the chosen subcommand."""
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
