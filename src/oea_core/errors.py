"""All exceptions raised by oea_core.

Every message names the file, table, column or setting involved and says what to do.
"""

from __future__ import annotations


class OEAError(Exception):
    """Base class of every error oea_core raises on purpose."""


class LakePathError(OEAError):
    """A lake location or a name used to build a lake path is not valid."""

    def __init__(self, message: str, *, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path


class SchemaError(OEAError):
    """A table schema spec (``[column, type, op]``) is not valid."""

    def __init__(self, message: str, *, table: str | None = None, column: str | None = None) -> None:
        super().__init__(message)
        self.table = table
        self.column = column


class SaltError(OEAError):
    """The pseudonymization salt is missing, empty, unreadable, too short, or not the lake's salt."""


class KeyVaultError(OEAError):
    """A Key Vault secret could not be read. The message names the vault and the secret, never a value.

    ``reason`` is one of ``not_found``, ``forbidden``, ``authentication``, ``unreachable``, ``empty``, ``failed``.
    """

    def __init__(self, message: str, *, vault: str, secret: str, reason: str) -> None:
        super().__init__(message)
        self.vault = vault
        self.secret = secret
        self.reason = reason


class LandingError(OEAError):
    """Files could not be landed in stage1np."""

    def __init__(self, message: str, *, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path


class EdFiApiError(LandingError):
    """An Ed-Fi API call failed for good."""


class SftpError(LandingError):
    """An SFTP folder could not be landed: a bad URL, no credential, an unknown host key, a refused login, a
    missing folder, or a connection that kept dropping. ``url`` never holds a secret; ``attempt`` is the last
    connection attempt made (0 before any)."""

    def __init__(self, message: str, *, url: str | None = None, attempt: int = 0) -> None:
        super().__init__(message, path=url)
        self.url = url
        self.attempt = attempt


class IngestError(OEAError):
    """A landed batch could not be ingested into stage 2."""

    def __init__(self, message: str, *, path: str | None = None, table: str | None = None) -> None:
        super().__init__(message)
        self.path = path
        self.table = table


class RejectedRowsError(IngestError):
    """More rows were rejected than the configured share allows; nothing was written."""

    def __init__(self, message: str, *, table: str, rejected: int, total: int) -> None:
        super().__init__(message, table=table)
        self.rejected = rejected
        self.total = total


class LakeStorageError(OEAError):
    """An ADLS Gen2 lake's storage account cannot be reached or used."""

    def __init__(self, message: str, *, account: str | None = None) -> None:
        super().__init__(message)
        self.account = account


class StorageCredentialError(LakeStorageError):
    """No credential for the lake's storage account, an incomplete one, or one the account refuses.

    ``source`` names where the credential came from (an environment variable), never its value.
    """

    def __init__(self, message: str, *, account: str | None = None, source: str | None = None) -> None:
        super().__init__(message, account=account)
        self.source = source


class DeltaTableError(OEAError):
    """A Delta table could not be read or written; the previous version is intact."""

    def __init__(self, message: str, *, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path


class CommitConflictError(DeltaTableError):
    """Another writer kept committing to the same Delta table; this commit was not made."""


class LakeLockError(OEAError):
    """Another run holds the lake's lock for this source (or flow), or the lock cannot be taken."""

    def __init__(self, message: str, *, path: str | None = None, holder: dict | None = None) -> None:
        super().__init__(message)
        self.path = path
        self.holder = holder


class DeltaEngineError(OEAError):
    """A Delta engine that is unknown, or that the Spark session cannot run."""

    def __init__(self, message: str, *, engine: str | None = None) -> None:
        super().__init__(message)
        self.engine = engine


class ModuleNotFoundInCatalog(OEAError):
    """A source module name is not registered."""


class NotebookRunError(OEAError):
    """A notebook failed while being executed by papermill."""

    def __init__(self, message: str, *, notebook: str | None = None) -> None:
        super().__init__(message)
        self.notebook = notebook


class SqlPreviewError(OEAError):
    """A preview query or view could not run."""


class FlowError(OEAError):
    """The flow file has problems, or a run of it failed; ``problems`` lists each one with its location."""

    def __init__(self, message: str, problems: list[str] | None = None, *, path: str | None = None) -> None:
        super().__init__(message)
        self.problems = problems or []
        self.path = path


class StepFailed(OEAError):
    """A flow step's own failure (an error check, a failed notebook, a timeout), with a message for the run log."""

    prefix = True  # the run log shows "<class>: <message>"; False: the message as it is


class StepTimeout(StepFailed):
    """A flow step ran past its timeout; its processes were killed."""


class WorkerFailed(StepFailed):
    """A flow step failed inside its worker process; the message is the worker's ``<class>: <message>``."""

    prefix = False


class SubmissionError(OEAError):
    """A submission bundle was refused (hostile or broken tarball, bad ``pipeline-config.json``, unknown
    pipeline), or the submission settings are wrong. ``member`` names the bundle member at fault, if one is."""

    def __init__(self, message: str, *, bundle: str | None = None, member: str | None = None) -> None:
        super().__init__(message)
        self.bundle = bundle
        self.member = member


class IncompleteBundleError(OEAError):
    """A submission bundle looks incomplete (still being written: no end-of-archive blocks, or a gzip stream cut
    short). Not a refusal: nothing is recorded, and ``oea watch`` leaves it in the inbox until it changes."""

    def __init__(self, message: str, *, bundle: str) -> None:
        super().__init__(message)
        self.bundle = bundle


class MissingExtraError(OEAError):
    """An optional package is not installed; the message names the extra to install."""


class UsageError(OEAError):
    """A command line that does not parse: an unknown command, module or option, or a missing argument."""


class GoldError(OEAError):
    """The gold layer (Data Vault, star schema) cannot be built from its inputs: a missing table or key
    column, a snapshot with a key twice, or a missing setting."""

    def __init__(self, message: str, *, table: str | None = None, column: str | None = None) -> None:
        super().__init__(message)
        self.table = table
        self.column = column


class DataQualityError(GoldError):
    """Data-quality checks of the gold layer found offending rows; ``failed`` maps each check to its count."""

    retryable = False  # the same data fails the same checks: a flow step does not try it again

    def __init__(self, message: str, *, failed: dict[str, int]) -> None:
        super().__init__(message)
        self.failed = failed


class PublishError(OEAError):
    """The lake's tables could not be published to PostgreSQL (``oea publish postgres``): a connection or
    permission problem, a table that cannot be read or loaded, a dbt model or test that failed (``nodes``), or a
    tool (dbt, pg_dump) that is missing. The message names the database or table, never a password."""

    def __init__(self, message: str, *, database: str | None = None, table: str | None = None,
                 nodes: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.database = database
        self.table = table
        self.nodes = nodes
