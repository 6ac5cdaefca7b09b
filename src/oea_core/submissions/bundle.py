"""Reading a submission bundle (a ``.tar`` or ``.tar.gz``) without trusting it.

Guarantees: :func:`inspect_bundle` streams every member's header once, before anything is
extracted, and refuses the bundle (:class:`~oea_core.errors.SubmissionError` naming the member) for a
path that is absolute or holds ``..``, a symbolic or hard link, a device or FIFO, a sparse file, a
name given twice, more than ``max_members`` members, or more than ``max_bytes`` bytes once unpacked
(declared sizes summed, extended headers' too; counting stops at the first member over a limit, so a
bomb of members is cheap to refuse). An extended header (pax, GNU long name) over 1 MiB, or more than
a few in a row, is refused from its header block, before its bytes are read. The decompressed stream
itself is capped too, so neither pass reads more than the limits allow whatever the headers claim.
A bundle is whole only with the two zero blocks that end a tar (and, gzipped, a whole gzip stream):
one cut short raises :class:`~oea_core.errors.IncompleteBundleError`, not a refusal, as it may still
be being written. :func:`extract_bundle` then extracts the data files (every
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
from typing import TYPE_CHECKING, Protocol, cast

from ..errors import IncompleteBundleError, SubmissionError
from ..intake.spark_paths import shown

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

    from typing_extensions import Self

CONFIG_NAME = "pipeline-config.json"
CONFIG_MAX_BYTES = 1 << 20
MAX_MEMBERS_SETTING = "OEA_SUBMISSION_MAX_MEMBERS"
MAX_BYTES_SETTING = "OEA_SUBMISSION_MAX_BYTES"
DEFAULT_MAX_MEMBERS = 10_000
DEFAULT_MAX_BYTES = 1 << 30  # 1 GiB unpacked
EXTENDED_MAX_BYTES = 1 << 20  # a pax or GNU long-name header: a path and a few attributes need far less
_EXTENDED = {tarfile.XHDTYPE: "a pax extended header", tarfile.XGLTYPE: "a pax global header",
             tarfile.SOLARIS_XHDTYPE: "a Solaris extended header", tarfile.GNUTYPE_LONGNAME: "a GNU long name",
             tarfile.GNUTYPE_LONGLINK: "a GNU long link name"}
_EXTENDED_IN_A_ROW = 8  # tarfile follows a chain of them by recursion
# per member: its header blocks (extended headers' too) and their padding
_HEADER_ALLOWANCE = (2 * _EXTENDED_IN_A_ROW + 2) * tarfile.BLOCKSIZE
_MAX_LISTED = 20
_CLIP = 100
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


def clipped(value: object, limit: int = _CLIP) -> str:
    """``repr(value)`` for a one-line reason, cut to a short prefix (and its full length) when it is long."""
    text = repr(value)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(value) if isinstance(value, str) else len(text):,} characters)"


def _member(name: str) -> str:
    return clipped(shown(name))


class _Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


class _Capped:
    """A read-only stream that refuses to give more than ``cap`` bytes (the decompressed bytes' guard)."""

    def __init__(self, stream: _Readable, cap: int, bundle: str, limits: SubmissionLimits) -> None:
        self._stream, self._cap, self._bundle, self._limits = stream, cap, bundle, limits
        self.read_bytes = 0
        self.exhausted = False  # a read came back short: the stream is at its end

    def read(self, size: int = -1) -> bytes:
        wanted = size if size is not None and size >= 0 else self._cap + 1 - self.read_bytes
        data = self._stream.read(wanted)
        self.exhausted = self.exhausted or len(data) < wanted
        self.read_bytes += len(data)
        if self.read_bytes > self._cap:
            raise SubmissionError(
                f"bundle {shown(self._bundle)} unpacks to more than {self._limits.max_bytes:,} bytes (the tar stream "
                f"went on past {self._cap:,} bytes): split it, or raise --max-bytes / {MAX_BYTES_SETTING}",
                bundle=self._bundle)
        return data


class _Budget:
    """What one read of a bundle has cost (bytes declared, extended headers' too) and how its last header block
    looked; it refuses an extended header before tarfile reads it."""

    def __init__(self, bundle: str, limits: SubmissionLimits) -> None:
        self.bundle, self.limits = bundle, limits
        self.total = 0
        self.in_a_row = 0
        self.last_block = "header"  # or "empty", "truncated", "zeros"

    def block(self, buf: bytes) -> None:
        self.last_block = ("empty" if not buf else "truncated" if len(buf) < tarfile.BLOCKSIZE
                           else "zeros" if not buf.strip(b"\0") else "header")

    def header(self, info: tarfile.TarInfo) -> None:
        what = _EXTENDED.get(info.type)
        self.in_a_row = self.in_a_row + 1 if what else 0
        if what is None:
            return
        if self.in_a_row > _EXTENDED_IN_A_ROW:
            why = f"more than {_EXTENDED_IN_A_ROW} extended headers in a row (pax or GNU); a member needs one or two"
        elif info.size > EXTENDED_MAX_BYTES:
            why = (f"{what} of {info.size:,} bytes, refused before reading it; an extended header is at most "
                   f"{EXTENDED_MAX_BYTES:,} bytes")
        elif self.total + info.size > self.limits.max_bytes:
            why = (f"{what} of {info.size:,} bytes takes the bundle to more than {self.limits.max_bytes:,} bytes: "
                   f"split the bundle, or raise --max-bytes / {MAX_BYTES_SETTING}")
        else:
            self.total += info.size
            return
        _refuse(self.bundle, [(info.name, why)])


def _guarded(budget: _Budget) -> type[tarfile.TarInfo]:
    """A TarInfo class whose headers go through ``budget`` as tarfile reads them (before an extended header's
    bytes are read, as tarfile reads those after ``frombuf``)."""

    class _Guarded(tarfile.TarInfo):
        @classmethod
        def frombuf(cls, buf: bytes | bytearray, encoding: str, errors: str) -> Self:
            budget.block(bytes(buf))
            info = super().frombuf(buf, encoding, errors)
            budget.header(info)
            return info

    return _Guarded


def _incomplete(bundle: str, detail: str) -> IncompleteBundleError:
    return IncompleteBundleError(
        f"bundle {shown(bundle)} looks incomplete ({detail}): it may still be being written, so nothing was "
        "recorded; submit it once it is whole (a tar ends with two zero blocks, a .tar.gz with its gzip trailer)",
        bundle=bundle)


def _broken(bundle: str, detail: str) -> SubmissionError:
    return SubmissionError(f"bundle {shown(bundle)} is not a readable tarball ({detail}): send a .tar or .tar.gz "
                           "made with tar", bundle=bundle)


class _Reading:
    """An open bundle: its members, then the check that it is whole."""

    def __init__(self, tar: tarfile.TarFile, stream: _Capped, budget: _Budget) -> None:
        self.tar, self.stream, self.budget = tar, stream, budget

    def members(self) -> Iterator[tarfile.TarInfo]:
        """Every member; once the last is read, IncompleteBundleError unless the tar's end is whole."""
        yield from self.tar
        self._check_end()

    def _check_end(self) -> None:
        # tarfile stops at the first block that is not a header, and takes a missing or short one as the end
        stream = cast("_Readable", self.tar.fileobj)
        at, bundle = self.tar.offset, self.budget.bundle
        if self.budget.last_block in ("empty", "truncated"):
            raise _incomplete(bundle, "the file is empty" if at == 0 else
                              f"the tar stops at byte {self.stream.read_bytes:,}, before its two end-of-archive blocks")
        if self.budget.last_block != "zeros":
            raise _broken(bundle, f"an unreadable header at byte {at:,}")
        second = stream.read(tarfile.BLOCKSIZE)
        if second.strip(b"\0"):
            raise _broken(bundle, f"a lone zero block at byte {at:,}, then data")
        if len(second) < tarfile.BLOCKSIZE:
            raise _incomplete(bundle, "the tar stops after the first of its two end-of-archive blocks")
        while stream.read(1 << 16):  # to the end: a gzip stream must be whole (and the cap holds)
            pass


def _out_of_data(exc: BaseException, stream: _Capped, budget: _Budget) -> bool:
    """Whether tarfile failed because the bytes ran out (the bundle is cut short), not because they are wrong."""
    return (isinstance(exc, tarfile.ReadError) and stream.exhausted
            and (budget.last_block in ("empty", "truncated") or "unexpected end of data" in str(exc)))


@contextlib.contextmanager
def _open(path: str, limits: SubmissionLimits) -> Iterator[_Reading]:
    """The bundle as a tar stream (gzip or plain), its decompressed bytes capped by ``limits``."""
    name = os.path.basename(path)
    cap = limits.max_bytes + _HEADER_ALLOWANCE * (limits.max_members + 1) + 10240
    budget = _Budget(name, limits)
    with open(path, "rb") as raw:
        magic = raw.read(2)
        raw.seek(0)
        stream: _Readable = gzip.GzipFile(fileobj=raw, mode="rb") if magic == b"\x1f\x8b" else raw
        capped = _Capped(stream, cap, name, limits)
        try:
            with tarfile.open(fileobj=capped, mode="r|", tarinfo=_guarded(budget)) as tar:  # type: ignore[call-overload]
                yield _Reading(tar, capped, budget)
        except EOFError as exc:  # gzip's: the compressed stream ends before its end-of-stream marker
            raise _incomplete(name, "its gzip stream ends early") from exc
        except _BROKEN as exc:
            if _out_of_data(exc, capped, budget):
                raise _incomplete(name, "the file is empty" if capped.read_bytes == 0 else f"the tar stops at "
                                  f"byte {capped.read_bytes:,}, before its two end-of-archive blocks") from exc
            raise _broken(name, f"{type(exc).__name__}: {exc}") from exc
        except OSError as exc:
            if exc.filename is not None:  # the file itself, not its contents
                raise
            raise _broken(name, str(exc)) from exc


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
        return f"a symbolic link (to {_member(member.linkname)})"
    if member.islnk():
        return f"a hard link (to {_member(member.linkname)})"
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
        listed = "; ".join(f"member {_member(member)}: {why}" for member, why in problems[:_MAX_LISTED])
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
    members = 0
    with _open(path, limits) as reading:
        budget, tar = reading.budget, reading.tar
        for member in reading.members():
            members += 1
            if members > limits.max_members:
                problems.append((member.name, (f"more than {limits.max_members:,} members (stopped counting): "
                                 f"split the bundle, or raise --max-members / {MAX_MEMBERS_SETTING}")))
                break
            budget.total += max(member.size, 0)
            if budget.total > limits.max_bytes:
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
    return BundleContents(config, tuple(data), members, budget.total)


def extract_bundle(path: str, dest: str, limits: SubmissionLimits) -> str:
    """Extract the data files (every member but the config) into ``dest`` (which must exist and be the
    caller's own); returns ``dest``. Each member is checked again, and extracted with ``filter="data"``."""
    bundle = os.path.basename(path)
    with _open(path, limits) as reading:
        tar = reading.tar
        for count, member in enumerate(reading.members(), start=1):
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
