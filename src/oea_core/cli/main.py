"""The ``oea`` parser, assembled from the command groups' modules; logging (every line redacted); ``main``."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import TYPE_CHECKING, NoReturn

from ..delta import ENGINE_SETTING, LOCAL_DEFAULT, engines
from ..errors import OEAError, UsageError
from ..lake.lock import WAIT_SETTING
from ..lake.paths import LakePaths
from ..privacy.redaction import redact
from .flow import flow_commands
from .lake import lake_commands
from .modules import module_commands, sql_commands
from .publish import publish_commands
from .submit import submission_commands

if TYPE_CHECKING:
    from .common import Handler


class _Parser(argparse.ArgumentParser):
    """Usage errors are one line and exit 1, like every other reported error."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see `{self.prog} --help`)")


def parser() -> argparse.ArgumentParser:
    """The ``oea`` argument parser."""
    root = _Parser(prog="oea", description="Open, tested OEA-style education data lake.")
    root.add_argument("--lake", help="lake folder or abfss:// URL (default: $OEA_LAKE, then ./lake)")
    root.add_argument("--engine", choices=engines.names(),
                      help="Delta engine (default: $OEA_ENGINE, else spark-delta on Synapse/Databricks, else "
                           f"{LOCAL_DEFAULT} locally)")
    root.add_argument("-q", "--quiet", action="store_true", help="print only warnings and errors")
    root.add_argument("--debug", action="store_true", help="show tracebacks")
    commands = root.add_subparsers(dest="command", required=True, metavar="COMMAND")
    module_commands(commands)
    sql_commands(commands)
    lake_commands(commands)
    publish_commands(commands)
    flow_commands(commands)
    submission_commands(commands)
    return root


class _RedactFilter(logging.Filter):
    """Keeps the salt out of every log line, whatever a library puts in a message."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = redact(record.getMessage()), ()
        return True


def _configure(args: argparse.Namespace) -> None:
    # Libraries (py4j, papermill) speak at WARNING and above; our own progress at INFO, per file at DEBUG.
    logging.basicConfig(level=logging.WARNING, format="oea: %(message)s", stream=sys.stderr)
    logging.getLogger("oea").setLevel(
        logging.WARNING if args.quiet else logging.DEBUG if args.debug else logging.INFO)
    for handler in logging.getLogger().handlers:
        handler.addFilter(_RedactFilter())
    if args.engine:  # through the environment, so notebook kernels and flow steps use it too
        os.environ[ENGINE_SETTING] = args.engine
    if getattr(args, "wait", None) is not None:  # likewise for the lake lock
        os.environ[WAIT_SETTING] = str(args.wait)
    if os.environ.get(ENGINE_SETTING):
        engines.get(os.environ[ENGINE_SETTING])  # an unknown name fails before Spark starts


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code (0 ok, 1 a reported error, 2 an unexpected one)."""
    debug = "--debug" in (sys.argv[1:] if argv is None else argv)
    try:
        args = parser().parse_args(argv)
        _configure(args)
        handler: Handler = args.handler
        return handler(LakePaths.from_setting(args.lake), args)
    except OEAError as exc:
        if debug:
            raise
        print(f"oea: error: {redact(str(exc))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("oea: interrupted; the lake is unchanged by the unfinished step", file=sys.stderr)
        return 130
    except Exception as exc:
        if debug:
            raise
        first_line = redact(str(exc)).splitlines()[0] if str(exc) else ""
        print(f"oea: unexpected error: {type(exc).__name__}: {first_line} (rerun with --debug for the traceback)",
              file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
