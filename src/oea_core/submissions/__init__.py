"""Tarball submissions: ``oea submit BUNDLE`` and ``oea watch INBOX`` (docs/pipeline-config.md).

A bundle is a ``.tar`` or ``.tar.gz`` holding ``pipeline-config.json`` (the pipeline that handles it, and its
options) and the data files. It is checked before anything is written (:mod:`.bundle`), its config against
the schema built from the pipeline registry (:mod:`.config`, :mod:`.pipelines`), processed once per SHA-256
(:mod:`.submit`), and its outcome recorded in ``oea-framework/submissions/`` (:mod:`.records`). An inbox,
local or on the account, is watched by :mod:`.inbox`.
"""

from __future__ import annotations

from .bundle import SubmissionLimits, extract_bundle, inspect_bundle
from .config import PipelineConfig, parse_config, pipeline_config_schema, schema_text
from .inbox import CloudInbox, LocalInbox, WatchSummary, open_inbox, watch_inbox
from .pipelines import PipelineRegistry, SubmissionPipeline, pipelines
from .records import read_record, record_path
from .submit import Submission, batch_id_of, submit_bundle

__all__ = ["CloudInbox", "LocalInbox", "PipelineConfig", "PipelineRegistry", "Submission", "SubmissionLimits",
           "SubmissionPipeline", "WatchSummary", "batch_id_of", "extract_bundle", "inspect_bundle", "open_inbox",
           "parse_config", "pipeline_config_schema", "pipelines", "read_record", "record_path", "schema_text",
           "submit_bundle", "watch_inbox"]
