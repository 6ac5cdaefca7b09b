"""Reading a submission bundle (a ``.tar`` or ``.tar.gz``) without trusting it.

Guarantees: :func:`inspect_bundle` streams every member's header once, before anything is
extracted, and refuses the bundle (:class:`~oea_core.errors.SubmissionError` naming the member) for a
path that is absolute or holds ``..``, a symbolic or hard link, a device or FIFO, a sparse file, a
name given twice, more than ``max_members`` members, or more than ``max_bytes`` bytes once unpacked
(declared sizes summed; counting stops at the first member over a limit, so a bomb of members is
cheap to refuse). The decompressed stream itself is capped too, so neither pass reads more than the
limits allow whatever the headers claim. :func:`extract_bundle` then extracts the data files (every
member but ``pipeline-config.json``) into a folder the caller owns, checking each member again and
with tarfile's ``filter="data"`` as a second guard (and modes
only the caller's user can use). A file that is not a tarball, or is corrupt, is
refused the same way.
"""

from __future__ import annotations

import contextlib
import errno
import gzip
import os
import posixpath
import tarfile
import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from ..errors import SubmissionError
from ..spark_paths import shown

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

CONFIG_NAME = "pipeline-config.json"
CONFIG_MAX_BYTES = 1 << 20
MAX_MEMBERS_SETTING = "OEA_SUBMISSION_MAX_MEMBERS"
MAX_BYTES_SETTING = "OEA_SUBMISSION_MAX_BYTES"
DEFAULT_MAX_MEMBERS = 10_000
DEFAULT_MAX_BYTES = 1 << 30  # 1 GiB unpacked
_HEADER_ALLOWANCE = 4096  # per member: its header blocks (a long name's too) and padding
_MAX_LISTED = 20
_BROKEN = (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile, UnicodeError)


@dataclass(frozen=True)
class SubmissionLimits:
    """How large a bundle may be: members, and bytes once unpacked."""

    max_members: int = DEFAULT_MAX_MEMBERS
    max_bytes: int = DEFAULT_MAX_BYTES

    @classmethod
    def from_settings(cls, max_members: int | None = None, max_bytes: int | None = None,
                      environ: Mapping[str, str] | None = None) -> SubmissionLimits:
        """The limits given, else ``$OEA_SUBMISSION_MAX_MEMBERS`` / ``$OEA_SUBMISSION_MAX_BYTES``, else the
        defaults; SubmissionError for a value that is not a positive whole number."""
        env = os.environ if environ is None else environ
        members = max_members if max_members is not None else _setting(env, MAX_MEMBERS_SETTING, DEFAULT_MAX_MEMBERS)
        size = max_bytes if max_bytes is not None else _setting(env, MAX_BYTES_SETTING, DEFAULT_MAX_BYTES)
        for name, value in (("max members", members), ("max bytes", size)):
            if value < 1:
                raise SubmissionError(f"submission {name} is {value}: give a whole number of 1 or more")
        return cls(members, size)


def _setting(env: Mapping[str, str], name: str, default: int) -> int:
    value = env.get(name, "").strip()
    if not value:
        return default
    try:
        return int(value.replace("_", ""))
    except ValueError:
        raise SubmissionError(f"{name}={value!r} is not a whole number: set it to e.g. {default}") from None


@dataclass(frozen=True)
class BundleContents:
    """What the headers of a bundle declare: its config's bytes, its data files, members and unpacked bytes."""

    config: bytes
    data_files: tuple[str, ...]
    members: int
    unpacked_bytes: int


class _Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


class _Capped:
    """A read-only stream that refuses to give more than ``cap`` bytes (the decompressed bytes' guard)."""

    def __init__(self, stream: _Readable, cap: int, bundle: str, limits: SubmissionLimits) -> None:
        self._stream, self._cap, self._bundle, self._limits = stream, cap, bundle, limits
        self.read_bytes = 0

    def read(self, size: int = -1) -> bytes:
        data = self._stream.read(size if size is not None and size >= 0 else self._cap + 1 - self.read_bytes)
        self.read_bytes += len(data)
        if self.read_bytes > self._cap:
            raise SubmissionError(
                f"bundle {shown(self._bundle)} unpacks to more than {self._limits.max_bytes:,} bytes (the tar stream "
                f"went on past {self._cap:,} bytes): split it, or raise --max-bytes / {MAX_BYTES_SETTING}",
                bundle=self._bundle)
        return data


@contextlib.contextmanager
def _open(path: str, limits: SubmissionLimits) -> Iterator[tarfile.TarFile]:
    """The bundle as a tar stream (gzip or plain), its decompressed bytes capped by ``limits``."""
    name = os.path.basename(path)
    cap = limits.max_bytes + _HEADER_ALLOWANCE * (limits.max_members + 1) + 10240
    with open(path, "rb") as raw:
        magic = raw.read(2)
        raw.seek(0)
        stream: _Readable = gzip.GzipFile(fileobj=raw, mode="rb") if magic == b"\x1f\x8b" else raw
        try:
            with tarfile.open(fileobj=_Capped(stream, cap, name, limits), mode="r|") as tar:  # type: ignore[call-overload]
                yield tar
        except _BROKEN as exc:
            raise SubmissionError(f"bundle {shown(name)} is not a readable tarball ({type(exc).__name__}: {exc}): "
                                  "send a .tar or .tar.gz made with tar", bundle=name) from exc
        except OSError as exc:
            if exc.filename is not None:  # the file itself, not its contents
                raise
            raise SubmissionError(f"bundle {shown(name)} is not a readable tarball ({exc}): send a .tar or .tar.gz "
                                  "made with tar", bundle=name) from exc


def _normal(name: str) -> str:
    """A member's name without a leading ``./`` or a trailing ``/``."""
    while name.startswith("./"):
        name = name[2:]
    return name.rstrip("/")


def member_problem(member: tarfile.TarInfo) -> str | None:
    """Why a member may not be extracted (None when it may)."""
    name = member.name
    if name.startswith(("/", "\\")) or posixpath.isabs(name) or (len(name) > 1 and name[1] == ":"):
        return "an absolute path"
    if ".." in name.replace("\\", "/").split("/"):
        return "a path with '..'"
    if member.issym():
        return f"a symbolic link (to {shown(member.linkname)})"
    if member.islnk():
        return f"a hard link (to {shown(member.linkname)})"
    if member.ischr():
        return "a character device"
    if member.isblk():
        return "a block device"
    if member.isfifo():
        return "a FIFO (named pipe)"
    if member.issparse():
        return "a sparse file"
    if not (member.isreg() or member.isdir()):
        return "neither a regular file nor a folder"
    if not _normal(name):
        return "an empty name"
    return None


def _refuse(bundle: str, problems: list[tuple[str, str]]) -> None:
    if problems:
        listed = "; ".join(f"member {shown(member)!r}: {why}" for member, why in problems[:_MAX_LISTED])
        more = f"; and {len(problems) - _MAX_LISTED} more" if len(problems) > _MAX_LISTED else ""
        raise SubmissionError(
            f"bundle {shown(bundle)} refused, nothing was written: {listed}{more}. A bundle holds only regular "
            f"files and folders with relative paths, and {CONFIG_NAME} at its top", bundle=bundle,
            member=problems[0][0])


def inspect_bundle(path: str, limits: SubmissionLimits) -> BundleContents:
    """Every member's header checked, and the config read, before anything is extracted; SubmissionError
    (naming the member at fault) when the bundle is refused."""
    bundle = os.path.basename(path)
    problems: list[tuple[str, str]] = []
    names: set[str] = set()
    data: list[str] = []
    config: bytes | None = None
    members = total = 0
    with _open(path, limits) as tar:
        for member in tar:
            members += 1
            if members > limits.max_members:
                problems.append((member.name, (f"more than {limits.max_members:,} members (stopped counting): "
                                 f"split the bundle, or raise --max-members / {MAX_MEMBERS_SETTING}")))
                break
            total += max(member.size, 0)
            if total > limits.max_bytes:
                problems.append((member.name, (f"the bundle unpacks to more than {limits.max_bytes:,} bytes with it "
                                 f"({member.size:,} bytes): split the bundle, or raise --max-bytes / "
                                 f"{MAX_BYTES_SETTING}")))
                break
            problem = member_problem(member)
            name = _normal(member.name)
            if problem is None and name in names:
                problem = "a name given twice"
            names.add(name)
            if problem:
                problems.append((member.name, problem))
            elif name == CONFIG_NAME and member.isreg():
                if member.size > CONFIG_MAX_BYTES:
                    problems.append((member.name, f"{member.size:,} bytes; a config is at most {CONFIG_MAX_BYTES:,}"))
                    continue
                handle = tar.extractfile(member)
                config = handle.read() if handle is not None else b""
            elif member.isreg():
                data.append(name)
    _refuse(bundle, problems)
    if config is None:
        raise SubmissionError(f"bundle {shown(bundle)} has no {CONFIG_NAME} at its top: add one naming the pipeline "
                              "(see docs/pipeline-config.md)", bundle=bundle, member=CONFIG_NAME)
    return BundleContents(config, tuple(data), members, total)


def extract_bundle(path: str, dest: str, limits: SubmissionLimits) -> str:
    """Extract the data files (every member but the config) into ``dest`` (which must exist and be the
    caller's own); returns ``dest``. Each member is checked again, and extracted with ``filter="data"``."""
    bundle = os.path.basename(path)
    with _open(path, limits) as tar:
        for count, member in enumerate(tar, start=1):
            problem = member_problem(member) or (
                f"past the limit of {limits.max_members:,} members" if count > limits.max_members else None)
            _refuse(bundle, [(member.name, problem)] if problem else [])
            if _normal(member.name) == CONFIG_NAME:
                continue
            try:
                tar.extract(member, dest, filter=_private)
            except tarfile.FilterError as exc:
                _refuse(bundle, [(member.name, f"refused by tarfile's data filter ({exc})")])
            except OSError as exc:
                if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):  # this machine's trouble, not the bundle's
                    raise
                _refuse(bundle, [(member.name, f"cannot be extracted ({exc.strerror})")])
    return dest


def _private(member: tarfile.TarInfo, dest: str) -> tarfile.TarInfo:
    """tarfile's ``data`` filter, then modes only this user can use (so no member's mode, 000 say, stops the
    extraction of the next, or hides a file from the pipeline)."""
    member = tarfile.data_filter(member, dest)
    return member.replace(mode=0o700 if member.isdir() else 0o600, deep=False)
