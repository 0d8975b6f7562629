"""The ``attnlib`` command line: ``attnlib data ...``, ``attnlib sweep ...``, ``attnlib reproduce ...``.

A bad choice (unknown profile, notebook, parameter, kernel) is one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from attnlib import UsageError


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser; each sub-command registers itself from its own module."""
    from attnlib import sweep
    from attnlib.data import commands as data_commands

    parser = argparse.ArgumentParser(prog="attnlib", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    data_commands.register_cli(sub)
    sweep.register_cli(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``attnlib`` console script; returns the process exit code (2: usage error)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.handler(args) or 0)
    except UsageError as err:
        print(f"attnlib: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
