"""What the ``oea`` command's groups share: the handler type, the ``oea`` log, adding a command and ``--wait``."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable

from ..lake.paths import LakePaths

log = logging.getLogger("oea")
Handler = Callable[[LakePaths, argparse.Namespace], int]


def command(commands: argparse._SubParsersAction, name: str, handler: Handler, *, help: str
            ) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = commands.add_parser(name, help=help)
    parser.set_defaults(handler=handler)
    return parser


def wait_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--wait", type=float, metavar="SECONDS",
                        help="when another run holds the lock (of this source, or flow), wait up to SECONDS for it "
                             "(default: $OEA_LOCK_WAIT, else 0: stop at once)")
