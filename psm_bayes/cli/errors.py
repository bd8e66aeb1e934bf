"""The one error path of the command line.

User errors (bad flags, bad or missing files, invalid data, refused outputs)
become ONE line on stderr naming the flag or field and what was expected, and
exit status 2. Anything else is an internal error: one line and exit status 1.
``psm-bayes --debug COMMAND ...`` re-raises instead, with the full traceback.
"""

from __future__ import annotations

import argparse
import sys

from psm_bayes.data import DataError
from psm_bayes.io import OutputError


class UsageError(ValueError):
    """A bad command-line value: ``flag`` is the flag (``--draws``) or file field it concerns."""

    def __init__(self, flag: str, message: str) -> None:
        super().__init__(f"{flag}: {message}")
        self.flag = flag


USER_ERRORS: tuple[type[BaseException], ...] = (UsageError, DataError, OutputError, ValueError,
                                                 FileNotFoundError, FileExistsError, IsADirectoryError,
                                                 NotADirectoryError, PermissionError)
"""Exceptions reported as user errors (one line, exit status 2)."""


def one_line(err: BaseException) -> str:
    """The first non-empty line of ``err``'s message (its type name when it has none)."""
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    return lines[0] if lines else type(err).__name__


def report(command: str, err: BaseException) -> int:
    """Print ``err`` as one line for ``command``; return the exit status."""
    if isinstance(err, USER_ERRORS):
        print(f"psm-bayes {command}: error: {one_line(err)}", file=sys.stderr)
        return 2
    print(f"psm-bayes {command}: internal error: {type(err).__name__}: {one_line(err)} "
          "(rerun with --debug for the traceback)", file=sys.stderr)
    return 1


def run_command(args: argparse.Namespace) -> int:
    """Run the parsed subcommand through the one error path."""
    debug = bool(getattr(args, "debug", False))
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"psm-bayes {args.command}: interrupted (outputs not finished were not written)", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 -- the single place that turns errors into exit statuses
        if debug:
            raise
        return report(args.command, err)


class Parser(argparse.ArgumentParser):
    """``ArgumentParser`` whose usage errors are one line: ``psm-bayes fit: error: argument --draws: ...``."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")
