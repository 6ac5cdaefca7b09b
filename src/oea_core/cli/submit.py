"""``oea submit`` (one tarball bundle) and ``oea watch`` (an inbox of them)."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

from ..errors import UsageError
from ..submissions import SubmissionLimits, open_inbox, schema_text, submit_bundle, watch_inbox
from ..submissions.inbox import DEFAULT_INTERVAL
from .common import command, wait_option

if TYPE_CHECKING:
    import argparse

    from ..lake.paths import LakePaths


def _limits(args: argparse.Namespace) -> SubmissionLimits:
    return SubmissionLimits.from_settings(args.max_members, args.max_bytes)


def _submit(lake: LakePaths, args: argparse.Namespace) -> int:
    if args.print_schema:
        sys.stdout.write(schema_text())
        return 0
    if not args.bundle:
        raise UsageError("oea submit needs a BUNDLE (.tar or .tar.gz), or --print-schema")
    if not os.path.isfile(args.bundle):
        raise UsageError(f"oea submit: {args.bundle} is not a file: give the path of a .tar or .tar.gz bundle")
    submission = submit_bundle(lake, args.bundle, limits=_limits(args))  # the bundle stays where it is
    print(submission.line())
    return 0 if submission.status == "accepted" else 1


def _watch(lake: LakePaths, args: argparse.Namespace) -> int:
    summary = watch_inbox(lake, open_inbox(args.inbox), limits=_limits(args), interval=args.interval, once=args.once)
    print(f"oea watch {args.inbox}: {summary.line()}")
    return 1 if summary.left and args.once else 0


def submission_commands(commands: argparse._SubParsersAction) -> None:
    submit = command(commands, "submit", _submit, help="process a tarball bundle once: its pipeline-config.json "
                     "names the pipeline (docs/pipeline-config.md); the file stays where it is")
    submit.add_argument("bundle", nargs="?", help="the .tar or .tar.gz bundle")
    submit.add_argument("--print-schema", action="store_true", help="print the pipeline-config.json JSON Schema")
    watch_ = command(commands, "watch", _watch, help="process every bundle dropped into INBOX, then move it to "
                     "INBOX/processed/ or INBOX/rejected/")
    watch_.add_argument("inbox", help="a local folder, or abfss://CONTAINER@ACCOUNT.dfs.core.windows.net/FOLDER")
    watch_.add_argument("--once", action="store_true", help="process the bundles there now, then stop")
    watch_.add_argument("--interval", type=float, default=DEFAULT_INTERVAL,
                        help="seconds between polls (default %(default)s)")
    for parser in (submit, watch_):
        parser.add_argument("--max-members", type=int, help="refuse a bundle of more members (default: "
                            "$OEA_SUBMISSION_MAX_MEMBERS, else 10000)")
        parser.add_argument("--max-bytes", type=int, help="refuse a bundle of more bytes once unpacked (default: "
                            "$OEA_SUBMISSION_MAX_BYTES, else 1 GiB)")
        wait_option(parser)
