"""What the sandbox's parent and worker share: limits of the pipe protocol and its framing.

A message is a 4-byte big-endian length, a JSON header (listing blob sizes), then raw
blobs. Arrays travel as raw bytes with a dtype from an allow-list and a shape; nothing
is ever pickled, so a hostile model cannot smuggle objects into the node.
"""

from __future__ import annotations

import json
import math
import struct
from typing import Any, Final, Sequence

import numpy as np

DEFAULT_MEMORY_BYTES: Final[int] = 1 << 30  # RLIMIT_AS of the worker
DEFAULT_WALL_SECONDS: Final[float] = 60.0  # one run: model load plus all inputs
DEFAULT_STARTUP_SECONDS: Final[float] = 60.0  # spawn plus imports (slow on a busy machine)
MAX_HEADER_BYTES: Final[int] = 1 << 16  # a JSON header is small; anything bigger is hostile
ALLOWED_DTYPES: Final[frozenset[str]] = frozenset({"float32", "float64", "int64", "int32", "uint8"})
SCORE_DTYPES: Final[frozenset[str]] = frozenset({"float32", "float64"})
ONNX_TENSOR_TYPES: Final[dict[str, str]] = {"float32": "tensor(float)", "float64": "tensor(double)",
                                            "int64": "tensor(int64)", "int32": "tensor(int32)", "uint8": "tensor(uint8)"}
ONNX_SCORE_TYPES: Final[frozenset[str]] = frozenset({"tensor(float)", "tensor(double)"})
PIPE_BYTES: Final[int] = 1 << 20  # requested pipe buffer (Linux default max)
MAX_CACHED_INPUTS: Final[int] = 16  # input arrays a worker keeps; more resets the cache
MAX_SESSIONS: Final[int] = 4  # warm model sessions a worker keeps (by model digest); more evicts the oldest
LEN = struct.Struct(">I")


def encode_message(header: dict[str, Any], blobs: Sequence[bytes | memoryview] = ()) -> list[bytes | memoryview]:
    """One message as a list of buffers: length, JSON header (listing blob sizes), blobs."""
    head = dict(header)
    head["blobs"] = [len(b) if isinstance(b, bytes) else b.nbytes for b in blobs]
    raw = json.dumps(head, separators=(",", ":")).encode()
    return [LEN.pack(len(raw)), raw, *blobs]


def array_header(arr: np.ndarray) -> dict[str, Any]:
    return {"dtype": str(arr.dtype), "shape": list(arr.shape)}


def array_from_blob(meta: dict[str, Any], blob: bytes) -> np.ndarray:
    """Rebuild an array from raw bytes, checking dtype and size (never unpickles)."""
    dtype = meta.get("dtype")
    shape = meta.get("shape")
    if dtype not in ALLOWED_DTYPES:
        raise ValueError(f"dtype {dtype!r} not allowed")
    if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape) or len(shape) > 8:
        raise ValueError(f"bad shape {shape!r}")
    dt = np.dtype(dtype)
    if math.prod(shape) * dt.itemsize != len(blob):
        raise ValueError(f"{len(blob)} bytes do not hold {dtype}{shape}")
    return np.frombuffer(blob, dtype=dt).reshape(shape)


def widen_pipe(fd: int) -> None:
    """Grow a pipe's buffer (Linux) so a score tensor passes in one write, without a
    ping-pong of 64 KiB chunks that costs a context switch each on a busy machine."""
    import fcntl

    setter = getattr(fcntl, "F_SETPIPE_SZ", None)
    if setter is None:
        return
    try:
        fcntl.fcntl(fd, setter, PIPE_BYTES)
    except OSError:
        pass  # above /proc/sys/fs/pipe-max-size: the default size still works, only slower
