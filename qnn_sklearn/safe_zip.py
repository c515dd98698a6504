"""Read zip archives that may have been crafted: every size they declare is bounded.

A zip says how large its members are, but that header can lie, and a few kilobytes of deflate
can inflate to gigabytes. Everything qnn_sklearn loads from a file (an estimator written by
``dump``, ``client.zip``, ``server.zip``) goes through this module, which

- refuses an archive with too many members, a member name that could leave an extraction
  directory (absolute, ``..``, backslash, NUL), duplicate names, encrypted members, and
  compression methods other than stored and deflate (the other two inflate a whole block at
  once, so a bound could only be checked afterwards);
- reads every member in chunks and stops as soon as it exceeds its limit, whatever its header
  says, so memory stays at one chunk plus the limit;
- caps a JSON member before ``json.loads`` sees it (parsing takes several times the text's
  size in memory).

The limits are module constants, read at call time: a deployment with larger models raises
them before loading (``qnn_sklearn.safe_zip.MAX_MEMBER_BYTES = ...``). The declared-size
limits at the end bound what a file may ask the loader to allocate (widths, bit widths).
"""

from __future__ import annotations

import io
import json
import os
import zipfile
import zlib
from collections.abc import Iterable
from pathlib import PurePosixPath

import numpy as np

MAX_ARCHIVE_BYTES = 512 * 2**20
"""Largest archive file, and largest sum of its members once inflated."""

MAX_MEMBER_BYTES = 256 * 2**20
"""Largest single member once inflated (``server.zip``'s shared library is the largest)."""

MAX_JSON_BYTES = 16 * 2**20
"""Largest JSON member; qnn_sklearn's own descriptions are a few kilobytes."""

MAX_MEMBERS = 1024
"""Most members of an archive; an estimator holds one per tensor, ``server.zip`` about ten."""

MAX_DECLARED_WIDTH = 2**16
"""Most features, neurons of a layer or outputs a file may declare."""

MAX_DECLARED_BITS = 64
"""Largest bit width a file may declare (quantizers and accumulators use far fewer)."""

MAX_DECLARED_ARRAY_BYTES = MAX_JSON_BYTES
"""Largest array a JSON member may ask for through a declared dtype (e.g. ``"<U99999999"``
class labels): a legitimate one is never larger than the JSON text that lists its values."""

CHUNK_BYTES = 2**20
"""Bytes read from a member at a time."""

_COMPRESSIONS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)
_ENCRYPTED_FLAG = 0x1


class UnsafeArchiveError(ValueError):
    """An archive that is malformed, or larger than the limits above allow."""


def open_archive(file, what: str) -> zipfile.ZipFile:
    """``file`` (a path or a binary file object) opened for reading, its members checked.

    Parameters
    ----------
    file : str, path-like or binary file object
        The archive.
    what : str
        How error messages name the archive (e.g. its path).
    """
    size = _archive_size(file)
    if size > MAX_ARCHIVE_BYTES:
        raise UnsafeArchiveError(
            f"{what} is {size} bytes, over the limit of {MAX_ARCHIVE_BYTES} "
            "(qnn_sklearn.safe_zip.MAX_ARCHIVE_BYTES)."
        )
    try:
        archive = zipfile.ZipFile(file)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError) as error:
        raise UnsafeArchiveError(f"{what} is not a zip archive ({error}).") from None
    try:
        _check_members(archive.infolist(), what)
    except BaseException:
        archive.close()
        raise
    return archive


def read_member(archive: zipfile.ZipFile, name: str, is_json: bool = False) -> bytes:
    """The inflated bytes of member ``name``, read in chunks and refused past
    :data:`MAX_MEMBER_BYTES` (:data:`MAX_JSON_BYTES` for a JSON member), whatever its header
    says; the CRC is checked at the end."""
    limit, constant = (
        (MAX_JSON_BYTES, "MAX_JSON_BYTES") if is_json else (MAX_MEMBER_BYTES, "MAX_MEMBER_BYTES")
    )
    buffer = io.BytesIO()
    _stream_member(archive, name, limit, constant, buffer)
    return buffer.getvalue()


def read_json_member(archive: zipfile.ZipFile, name: str):
    """Member ``name`` parsed as UTF-8 JSON, refused past :data:`MAX_JSON_BYTES`."""
    text = read_member(archive, name, is_json=True)
    try:
        return json.loads(text.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UnsafeArchiveError(f"{name} is not UTF-8 JSON ({error}).") from None
    except RecursionError:
        raise UnsafeArchiveError(f"{name} nests its JSON too deeply.") from None


def require_members(archive: zipfile.ZipFile, names: Iterable[str], what: str, writer: str) -> None:
    """:class:`UnsafeArchiveError` unless ``archive`` holds every member of ``names``; the
    message lists the missing ones under ``what`` (how to name the archive) and says that
    ``writer`` did not write it, since what it writes always has them."""
    missing = sorted(set(names) - set(archive.namelist()))
    if missing:
        raise UnsafeArchiveError(f"{what} lacks {missing}: it was not written by {writer}.")


def verify_members(archive: zipfile.ZipFile) -> None:
    """Inflate every member without keeping it: sizes, their sum and CRCs are what they claim.

    Run this before handing an archive to code that extracts it without limits.
    """
    total = 0
    for info in archive.infolist():
        total += _stream_member(archive, info.filename, MAX_MEMBER_BYTES, "MAX_MEMBER_BYTES")
        _check_size("The archive", total, MAX_ARCHIVE_BYTES, "MAX_ARCHIVE_BYTES", "inflates to")


def declared_int(value, where: str, limit: int) -> int:
    """``value`` if it is an integer in ``[1, limit]``; :class:`UnsafeArchiveError` naming
    ``where`` otherwise (a file declares it, so a huge one must not reach an allocation)."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= limit:
        raise UnsafeArchiveError(
            f"{where} must be an integer in [1, {limit}], got {str(value)[:100]}."
        )
    return value


def declared_dtype(declared, n_values: int, where: str) -> np.dtype:
    """The numpy dtype named by the string ``declared``, refused when ``n_values`` items of it
    would take more than :data:`MAX_DECLARED_ARRAY_BYTES`."""
    try:
        if not isinstance(declared, str):
            raise TypeError(f"{declared!r} is not a dtype string")
        dtype = np.dtype(declared)
    except (TypeError, ValueError) as error:
        raise UnsafeArchiveError(f"{where}: not a numpy dtype ({error}).") from None
    # numpy's itemsize overflows into negative numbers for huge declared string lengths
    if dtype.itemsize < 0 or dtype.itemsize * n_values > MAX_DECLARED_ARRAY_BYTES:
        raise UnsafeArchiveError(
            f"{where}: {n_values} values of {declared} take more than "
            f"{MAX_DECLARED_ARRAY_BYTES} bytes, over the limit "
            "(qnn_sklearn.safe_zip.MAX_DECLARED_ARRAY_BYTES)."
        )
    return dtype


def _archive_size(file) -> int:
    if isinstance(file, (str, os.PathLike)):
        return os.path.getsize(file)
    position = file.tell()
    size = file.seek(0, io.SEEK_END)
    file.seek(position)
    return size - position


def _check_members(infos: list[zipfile.ZipInfo], what: str) -> None:
    if len(infos) > MAX_MEMBERS:
        raise UnsafeArchiveError(
            f"{what} has {len(infos)} members, over the limit of {MAX_MEMBERS} "
            "(qnn_sklearn.safe_zip.MAX_MEMBERS)."
        )
    names = set()
    for info in infos:
        name = info.filename
        _check_member_name(name, what)
        if name in names:
            raise UnsafeArchiveError(f"{what} holds the member {name!r} twice.")
        names.add(name)
        if info.flag_bits & _ENCRYPTED_FLAG:
            raise UnsafeArchiveError(f"{what}: member {name!r} is encrypted.")
        if info.compress_type not in _COMPRESSIONS:
            raise UnsafeArchiveError(
                f"{what}: member {name!r} uses compression method {info.compress_type}; "
                "only stored and deflate members are read."
            )
        _check_size(name, info.file_size, MAX_MEMBER_BYTES, "MAX_MEMBER_BYTES", "declares")
    declared = sum(info.file_size for info in infos)
    _check_size(what, declared, MAX_ARCHIVE_BYTES, "MAX_ARCHIVE_BYTES", "declares in all")


def _check_member_name(name: str, what: str) -> None:
    parts = PurePosixPath(name).parts
    unsafe = (
        not name
        or "\x00" in name
        or "\\" in name
        or name.startswith("/")
        or ":" in parts[0]
        or any(part in (".", "..") for part in parts)
    )
    if unsafe:
        raise UnsafeArchiveError(
            f"{what} holds the member name {name!r}, which could be written outside an "
            "extraction directory; refusing the archive."
        )


def _check_size(name: str, size: int, limit: int, constant: str, verb: str) -> None:
    if size > limit:
        raise UnsafeArchiveError(
            f"{name} {verb} more than {limit} bytes inflated, over the limit "
            f"(qnn_sklearn.safe_zip.{constant})."
        )


def _stream_member(
    archive: zipfile.ZipFile, name: str, limit: int, constant: str, sink=None
) -> int:
    """Inflate ``name`` chunk by chunk into ``sink`` (or nowhere); returns its size.

    ``constant`` names the limit in error messages, so that they say what to raise.
    """
    try:
        info = archive.getinfo(name)
    except KeyError:
        raise UnsafeArchiveError(f"The archive has no member {name!r}.") from None
    _check_size(name, info.file_size, limit, constant, "declares")
    size = 0
    try:
        with archive.open(info) as stream:
            while chunk := stream.read(CHUNK_BYTES):
                size += len(chunk)
                _check_size(name, size, limit, constant, "inflates to")
                if sink is not None:
                    sink.write(chunk)
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError) as error:
        raise UnsafeArchiveError(f"Member {name!r} is corrupt ({error}).") from None
    if size != info.file_size:
        raise UnsafeArchiveError(
            f"Member {name!r} inflates to {size} bytes but declares {info.file_size}."
        )
    return size
