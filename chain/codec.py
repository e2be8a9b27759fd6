"""Canonical msgpack encoding with a schema per type (docs/design.md §3).

Every protocol object is a frozen dataclass with a ``FIELDS`` table of
``(name, codec)`` pairs; it is encoded as a msgpack *array* in that order, so
there is one encoding per value. Decoding checks every field's type and size
limit, rejects floats, maps, trailing bytes and non-minimal integers (by
re-encoding and comparing), and raises only ``DecodeError``.
"""

from __future__ import annotations

from dataclasses import fields as dc_fields
from typing import Any, Callable, ClassVar, Final, Generic, Protocol, TypeVar

import msgpack

from .errors import DecodeError

T = TypeVar("T")

MAX_MESSAGE_BYTES: Final[int] = 64 * 1024 * 1024  # one encoded object, hard cap


class Codec(Protocol[T]):  # type: ignore[misc]
    def to_obj(self, value: T) -> Any: ...

    def from_obj(self, obj: Any) -> T: ...


class UInt:
    """An unsigned integer below ``2^bits`` (bits <= 64: msgpack's native range)."""

    def __init__(self, bits: int) -> None:
        self.limit = 1 << bits
        self.bits = bits

    def to_obj(self, value: int) -> int:
        if type(value) is not int or not 0 <= value < self.limit:
            raise DecodeError(f"value {value!r} is not a u{self.bits}")
        return value

    def from_obj(self, obj: Any) -> int:
        if type(obj) is not int or not 0 <= obj < self.limit:
            raise DecodeError(f"expected u{self.bits}, got {type(obj).__name__} {obj!r:.40}")
        return obj


class SInt:
    """A signed integer in ``[-2^(bits-1), 2^(bits-1))``."""

    def __init__(self, bits: int) -> None:
        self.low = -(1 << (bits - 1))
        self.high = 1 << (bits - 1)
        self.bits = bits

    def to_obj(self, value: int) -> int:
        return self.from_obj(value)

    def from_obj(self, obj: Any) -> int:
        if type(obj) is not int or not self.low <= obj < self.high:
            raise DecodeError(f"expected i{self.bits}, got {type(obj).__name__} {obj!r:.40}")
        return obj


class Amount:
    """A token amount below 2^128, as 16 big-endian bytes (msgpack ints stop at 2^64)."""

    SIZE: Final[int] = 16

    def to_obj(self, value: int) -> bytes:
        if type(value) is not int or not 0 <= value < 1 << 128:
            raise DecodeError(f"amount {value!r} outside 0..2^128")
        return value.to_bytes(self.SIZE, "big")

    def from_obj(self, obj: Any) -> int:
        if type(obj) is not bytes or len(obj) != self.SIZE:
            raise DecodeError("an amount is 16 bytes")
        return int.from_bytes(obj, "big")


class Bytes:
    """Bytes of an exact length, or of at most ``max_len``."""

    def __init__(self, exact: int | None = None, max_len: int | None = None) -> None:
        if (exact is None) == (max_len is None):
            raise ValueError("give exactly one of exact, max_len")
        self.exact = exact
        self.max_len = max_len

    def to_obj(self, value: bytes) -> bytes:
        return self.from_obj(value)

    def from_obj(self, obj: Any) -> bytes:
        if type(obj) is not bytes:
            raise DecodeError(f"expected bytes, got {type(obj).__name__}")
        if self.exact is not None and len(obj) != self.exact:
            raise DecodeError(f"expected {self.exact} bytes, got {len(obj)}")
        if self.max_len is not None and len(obj) > self.max_len:
            raise DecodeError(f"{len(obj)} bytes exceed the limit of {self.max_len}")
        return obj


class Str:
    def __init__(self, max_len: int) -> None:
        self.max_len = max_len

    def to_obj(self, value: str) -> str:
        return self.from_obj(value)

    def from_obj(self, obj: Any) -> str:
        if type(obj) is not str:
            raise DecodeError(f"expected a string, got {type(obj).__name__}")
        if len(obj.encode()) > self.max_len:
            raise DecodeError(f"string exceeds {self.max_len} bytes")
        return obj


class ListOf(Generic[T]):
    """A tuple of items, at most ``max_len`` of them."""

    def __init__(self, item: Codec[T], max_len: int) -> None:
        self.item = item
        self.max_len = max_len

    def to_obj(self, value: tuple[T, ...]) -> list[Any]:
        if not isinstance(value, (tuple, list)) or len(value) > self.max_len:
            raise DecodeError(f"expected a list of at most {self.max_len} items")
        if isinstance(self.item, (UInt, SInt)):
            return list(self._check_ints(value))
        return [self.item.to_obj(v) for v in value]

    def from_obj(self, obj: Any) -> tuple[T, ...]:
        if type(obj) is not list:
            raise DecodeError(f"expected a list, got {type(obj).__name__}")
        if len(obj) > self.max_len:
            raise DecodeError(f"list of {len(obj)} items exceeds the limit of {self.max_len}")
        if isinstance(self.item, (UInt, SInt)):
            return tuple(self._check_ints(obj))
        return tuple(self.item.from_obj(v) for v in obj)

    def _check_ints(self, values: Any) -> Any:
        """Fast path for integer lists (embeddings): one pass of builtins, same rules."""
        if not values:
            return values
        if not all(type(v) is int for v in values):
            raise DecodeError("expected a list of integers")
        low, high = (0, self.item.limit) if isinstance(self.item, UInt) else (self.item.low, self.item.high)
        if min(values) < low or max(values) >= high:
            raise DecodeError("integer in list out of range")
        return values


class Optional_(Generic[T]):
    """``None`` (msgpack nil) or a value."""

    def __init__(self, inner: Codec[T]) -> None:
        self.inner = inner

    def to_obj(self, value: T | None) -> Any:
        return None if value is None else self.inner.to_obj(value)

    def from_obj(self, obj: Any) -> T | None:
        return None if obj is None else self.inner.from_obj(obj)


class Struct(Generic[T]):
    """A nested schema'd dataclass."""

    def __init__(self, cls: type[T]) -> None:
        self.cls = cls

    def to_obj(self, value: T) -> list[Any]:
        if not isinstance(value, self.cls):
            raise DecodeError(f"expected {self.cls.__name__}, got {type(value).__name__}")
        return struct_to_obj(value)

    def from_obj(self, obj: Any) -> T:
        return struct_from_obj(self.cls, obj)


class Schema:
    """Mixin for dataclasses with a ``FIELDS`` table; gives ``encode``/``decode``."""

    FIELDS: ClassVar[tuple[tuple[str, Any], ...]] = ()

    def encode(self) -> bytes:
        return pack(struct_to_obj(self))

    @classmethod
    def decode(cls: type[T], data: bytes) -> T:
        return decode_as(cls, data)


def struct_to_obj(value: Any) -> list[Any]:
    return [codec.to_obj(getattr(value, name)) for name, codec in value.FIELDS]


def struct_from_obj(cls: type[T], obj: Any) -> T:
    table = cls.FIELDS  # type: ignore[attr-defined]
    if type(obj) is not list:
        raise DecodeError(f"{cls.__name__}: expected an array, got {type(obj).__name__}")
    if len(obj) != len(table):
        raise DecodeError(f"{cls.__name__}: expected {len(table)} fields, got {len(obj)}")
    kwargs = {}
    for (name, codec), item in zip(table, obj):
        try:
            kwargs[name] = codec.from_obj(item)
        except DecodeError as exc:
            raise DecodeError(f"{cls.__name__}.{name}: {exc}") from None
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise DecodeError(f"{cls.__name__}: {exc}") from None


def pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)  # type: ignore[no-any-return]


def unpack_canonical(data: bytes) -> Any:
    """Unpack one msgpack value, refusing trailing bytes, maps, floats and non-canonical forms."""
    if not isinstance(data, (bytes, bytearray)):
        raise DecodeError("expected bytes")
    if len(data) > MAX_MESSAGE_BYTES:
        raise DecodeError(f"{len(data)} bytes exceed the message cap of {MAX_MESSAGE_BYTES}")
    try:
        obj = msgpack.unpackb(
            bytes(data),
            raw=False,
            use_list=True,
            strict_map_key=True,
        )
    except (msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
        raise DecodeError(f"malformed msgpack: {exc}") from None
    except (ValueError, TypeError, UnicodeDecodeError, OverflowError) as exc:
        raise DecodeError(f"malformed msgpack: {exc}") from None
    except Exception as exc:  # msgpack raises a few undocumented kinds on hostile input
        raise DecodeError(f"malformed msgpack: {type(exc).__name__}") from None
    if pack(obj) != bytes(data):
        raise DecodeError("non-canonical encoding")
    return obj


def decode_as(cls: type[T], data: bytes) -> T:
    return struct_from_obj(cls, unpack_canonical(data))


def check_fields_match(cls: type) -> None:
    """Guard against a ``FIELDS`` table drifting from its dataclass (run at import)."""
    names = tuple(f.name for f in dc_fields(cls))
    table = tuple(name for name, _ in cls.FIELDS)  # type: ignore[attr-defined]
    if names != table:
        raise TypeError(f"{cls.__name__}: FIELDS {table} differ from dataclass fields {names}")


def schema(cls: type[T]) -> type[T]:
    """Class decorator: verify the table at import time."""
    check_fields_match(cls)
    return cls


Encoder = Callable[[Any], bytes]
