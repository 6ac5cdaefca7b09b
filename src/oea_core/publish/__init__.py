"""Publishing the lake to PostgreSQL: the star schema loaded into a dev database, transformed and tested by
dbt (``transform/``), then copied atomically to a prod database that a read-only role reads.
See ``docs/publishing.md``."""

from __future__ import annotations

from .run import PublishResult, publish_postgres

__all__ = ["PublishResult", "publish_postgres"]
