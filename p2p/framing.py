"""Length-prefixed msgpack frames over a libp2p stream, with caps and deadlines.

Wire format of one frame: a 4-byte big-endian length, then that many bytes. Control
frames carry a msgpack array; bulk frames carry raw bytes. Every read is exact
(libp2p ``read(n)`` may return fewer bytes) and bounded by the caller's cap, so a
peer can neither make us allocate more than the cap nor stall us past the
surrounding ``trio.fail_after``/``move_on_after``.
"""

from __future__ import annotations

import struct
from typing import Any, Protocol

import msgpack

from p2p.errors import FrameTooLarge, ProtocolViolation, StreamEnded

_LEN = struct.Struct(">I")
# Control frames (requests, status replies) are tiny; cap them hard.
CONTROL_FRAME_CAP = 4096


class ByteStream(Protocol):
    """The part of ``libp2p``'s ``INetStream`` the framing needs."""

    async def read(self, n: int | None = None) -> bytes: ...

    async def write(self, data: bytes) -> None: ...


async def read_exactly(stream: ByteStream, n: int) -> bytes:
    """Read exactly ``n`` bytes or raise ``ProtocolViolation`` on early EOF."""
    from libp2p.network.stream.exceptions import StreamEOF

    parts: list[bytes] = []
    got = 0
    while got < n:
        try:
            chunk = await stream.read(n - got)
        except StreamEOF:
            chunk = b""
        if not chunk:
            if got == 0:
                raise StreamEnded(f"stream ended before any of {n} bytes")
            raise ProtocolViolation(f"stream ended after {got} of {n} bytes")
        parts.append(chunk)
        got += len(chunk)
    return b"".join(parts)


def encode_frame(payload: bytes) -> bytes:
    """Prefix ``payload`` with its 4-byte length."""
    return _LEN.pack(len(payload)) + payload


async def write_bytes_frame(stream: ByteStream, payload: bytes) -> None:
    """Write one raw-bytes frame."""
    await stream.write(encode_frame(payload))


async def read_bytes_frame(stream: ByteStream, cap: int) -> bytes:
    """Read one raw-bytes frame of at most ``cap`` bytes."""
    (size,) = _LEN.unpack(await read_exactly(stream, _LEN.size))
    if size > cap:
        raise FrameTooLarge(size, cap)
    return await read_exactly(stream, size)


def pack(obj: list[Any]) -> bytes:
    """msgpack-encode a control array (bytes stay bytes, no floats expected)."""
    return msgpack.packb(obj, use_bin_type=True)


def unpack_array(data: bytes) -> list[Any]:
    """Decode a control array; anything else (map, scalar, trailing bytes) is a violation."""
    try:
        obj = msgpack.unpackb(data, raw=False, use_list=True, strict_map_key=True)
    except (msgpack.ExtraData, msgpack.FormatError, msgpack.StackError, ValueError, TypeError) as exc:
        raise ProtocolViolation(f"undecodable control frame: {exc}") from exc
    if not isinstance(obj, list) or not obj:
        raise ProtocolViolation("control frame is not a non-empty array")
    return obj


async def write_control(stream: ByteStream, obj: list[Any]) -> None:
    """Write one control frame."""
    await write_bytes_frame(stream, pack(obj))


async def read_control(stream: ByteStream, cap: int = CONTROL_FRAME_CAP) -> list[Any]:
    """Read and decode one control frame."""
    return unpack_array(await read_bytes_frame(stream, cap))


def expect_int(value: Any, name: str, lo: int, hi: int) -> int:
    """Return ``value`` if it is an int in ``[lo, hi]``, else raise ``ProtocolViolation``."""
    if type(value) is not int or not lo <= value <= hi:
        raise ProtocolViolation(f"{name} must be an int in [{lo}, {hi}], got {value!r}")
    return value


def expect_bytes(value: Any, name: str, length: int | None = None, cap: int = 1024) -> bytes:
    """Return ``value`` if it is bytes of the given length (or at most ``cap``)."""
    if not isinstance(value, bytes):
        raise ProtocolViolation(f"{name} must be bytes, got {type(value).__name__}")
    if length is not None and len(value) != length:
        raise ProtocolViolation(f"{name} must be {length} bytes, got {len(value)}")
    if len(value) > cap:
        raise ProtocolViolation(f"{name} longer than {cap} bytes")
    return value
