"""The ``oea`` command: ``oea [--lake PATH] <command> ...``, one handler per command.

Each command's parser sets its handler with ``set_defaults(handler=...)``; a handler takes the
lake and the parsed arguments and returns the exit code. Module-specific options come from the
module's descriptor (``oea land edfi --api``, ``oea generate clever --days``).

One module per command group: ``modules`` (land, ingest, views, run, generate, sql), ``lake`` (lake check,
synapse), ``publish``, ``flow``, ``submit`` (submit, watch); ``main`` assembles the parser and runs a command.
"""

from __future__ import annotations

from .main import main, parser

__all__ = ["main", "parser"]
