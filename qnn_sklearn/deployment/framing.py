"""A simple binary framing that carries several serialized ciphertexts in one bytes blob.

Layout (all integers little endian)::

    b"QNNF"  version:u8  count:u32  then `count` times:  length:u64  payload[length]

The framing holds only concrete-python's own serialized values; nothing in it is unpickled.
:func:`unpack` checks every length against what is left, so truncated or garbage input raises
:class:`FramingError` (a ``ValueError``) instead of reading past the end.
"""

from __future__ import annotations

import struct

MAGIC = b"QNNF"
VERSION = 1
_HEADER = struct.Struct("<4sBI")
_LENGTH = struct.Struct("<Q")

MAX_ITEMS = 1_000_000
"""Upper bound on ``count``, checked before anything is allocated."""


class FramingError(ValueError):
    """The bytes are not a well-formed frame of serialized values."""


def pack(payloads: list[bytes]) -> bytes:
    """Frame ``payloads`` (each a ``bytes``) into one blob."""
    payloads = list(payloads)
    if not payloads:
        raise FramingError("Nothing to frame: give at least one serialized value.")
    if len(payloads) > MAX_ITEMS:
        raise FramingError(f"Too many values to frame: {len(payloads)} > {MAX_ITEMS}.")
    parts = [_HEADER.pack(MAGIC, VERSION, len(payloads))]
    for payload in payloads:
        if not isinstance(payload, (bytes, bytearray, memoryview)):
            raise TypeError(f"Framed values must be bytes, got {type(payload).__name__}.")
        parts.append(_LENGTH.pack(len(payload)))
        parts.append(bytes(payload))
    return b"".join(parts)


def unpack(blob: bytes, max_items: int = MAX_ITEMS) -> list[bytes]:
    """Inverse of :func:`pack`; :class:`FramingError` names what is wrong with ``blob``."""
    if not isinstance(blob, (bytes, bytearray, memoryview)):
        raise FramingError(f"Expected bytes, got {type(blob).__name__}.")
    view = memoryview(blob)
    if len(view) < _HEADER.size:
        raise FramingError(
            f"Input is {len(view)} bytes, shorter than the {_HEADER.size}-byte frame header: "
            "it is truncated or not made by quantize_encrypt_serialize."
        )
    magic, version, count = _HEADER.unpack_from(view, 0)
    if magic != MAGIC:
        raise FramingError(
            "Input does not start with the qnn_sklearn frame marker: it was not made by "
            "quantize_encrypt_serialize / FHEModelServer.run."
        )
    if version != VERSION:
        raise FramingError(f"Unsupported frame version {version}; this reader handles {VERSION}.")
    if count == 0:
        raise FramingError("The frame holds no value.")
    if count > max_items:
        raise FramingError(f"The frame holds {count} values, more than the limit of {max_items}.")
    offset = _HEADER.size
    payloads = []
    for index in range(count):
        if offset + _LENGTH.size > len(view):
            raise FramingError(f"Truncated frame: value {index} of {count} has no length field.")
        (length,) = _LENGTH.unpack_from(view, offset)
        offset += _LENGTH.size
        if length > len(view) - offset:
            raise FramingError(
                f"Truncated frame: value {index} of {count} announces {length} bytes, "
                f"only {len(view) - offset} are left."
            )
        payloads.append(bytes(view[offset : offset + length]))
        offset += length
    if offset != len(view):
        raise FramingError(f"{len(view) - offset} unexpected bytes after the last framed value.")
    return payloads


def count(blob: bytes) -> int:
    """Number of values in a frame, from its header (the rest is not checked)."""
    if len(blob) < _HEADER.size:
        raise FramingError("Input is shorter than the frame header.")
    magic, _, n = _HEADER.unpack_from(blob, 0)
    if magic != MAGIC:
        raise FramingError("Input does not start with the qnn_sklearn frame marker.")
    return n
