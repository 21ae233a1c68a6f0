"""Shared entry-point plumbing for ``python -m stages.<name>``.

Parses ``--params PATH`` and repeated ``--set dotted.key=value``, validates the
configuration once, sets up logging, and turns the project's own errors into one line on
stderr with a non-zero exit (a traceback only with ``M3SA_DEBUG=1``).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Callable

from m3sa.config import Config, load_params
from m3sa.errors import M3SAError

EXIT_USER_ERROR = 2


def parse_args(name: str, argv: list[str] | None = None, extra: Callable[[argparse.ArgumentParser], None] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=f"python -m stages.{name}", description=f"M3SA pipeline stage '{name}'.")
    parser.add_argument("--params", default="params.yaml", help="parameters file (default: params.yaml)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override one parameter, e.g. --set model.filter=hard (repeatable)")
    if extra is not None:
        extra(parser)
    return parser.parse_args(argv)


def run(name: str, main: Callable[[Config, argparse.Namespace], None], argv: list[str] | None = None,
        extra: Callable[[argparse.ArgumentParser], None] | None = None) -> None:
    """Run a stage's ``main(cfg, args)`` with the project's error policy."""
    debug = os.environ.get("M3SA_DEBUG", "") not in ("", "0")
    logging.basicConfig(level=logging.DEBUG if debug else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    args = parse_args(name, argv, extra)
    try:
        cfg = load_params(args.params, args.overrides)
        main(cfg, args)
    except M3SAError as err:
        if debug:
            raise
        one_line = " ".join(str(err).split("\n"))  # the policy is one line, whatever the message holds
        print(f"error: {name}: {one_line}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
    except KeyboardInterrupt:
        print(f"error: {name}: interrupted", file=sys.stderr)
        sys.exit(130)
