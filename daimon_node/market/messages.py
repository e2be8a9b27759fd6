"""The typed messages of ``/daimon/infer/1`` and the pricing rule, without any transport.

``price`` is per input item: a call of N inputs costs ``N * price`` (``call_cost``), and
the voucher sent with it must add at least that to what the payer already paid. Inputs
and scores travel as ``.npy`` bytes (``npy_bytes``, ``parse_npy``). ``market.wire`` maps
these to frames; the paying user's ``channel_client`` uses them without libp2p.
"""

from __future__ import annotations

import functools
import io
import math
from dataclasses import dataclass
from typing import Final, Union

import numpy as np

from chain.payloads import Voucher

from daimon_node.market.errors import BadInput

MAX_NPY_HEADER: Final[int] = 10_000  # numpy's own default cap on an .npy header


@dataclass(frozen=True)
class QuoteRequest:
    chain_id: bytes
    payer: bytes  # address


@dataclass(frozen=True)
class InferRequest:
    chain_id: bytes
    voucher: Voucher
    inputs_npy: bytes


@dataclass(frozen=True)
class Quote:
    price: int  # per input item
    model_digest: bytes
    paid: int  # what the runner holds from this payer in the channel's epoch
    epoch: int


@dataclass(frozen=True)
class Inference:
    model_digest: bytes
    scores_npy: bytes
    cumulative: int


@dataclass(frozen=True)
class Refusal:
    code: str
    message: str


InferRequestT = Union[QuoteRequest, InferRequest]
InferReplyT = Union[Quote, Inference, Refusal]


def call_cost(price_per_item: int, items: int) -> int:
    """What a call of ``items`` inputs costs at ``price_per_item`` (the voucher must add this)."""
    return price_per_item * items


def npy_bytes(arr: np.ndarray) -> bytes:
    """``arr`` as ``.npy`` bytes (what ``np.save`` writes), with the header of each shape and
    dtype built once: a paid call encodes its inputs and its scores in the same shapes every time."""
    arr = np.ascontiguousarray(arr)
    return b"".join((_npy_header(arr.shape, arr.dtype.str), memoryview(arr).cast("B")))


@functools.lru_cache(maxsize=256)
def _npy_header(shape: tuple[int, ...], dtype: str) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": dtype, "fortran_order": False, "shape": shape})
    return buf.getvalue()


def parse_npy(data: bytes) -> np.ndarray:
    """A numeric array from ``.npy`` bytes anyone sent: the header is parsed, its shape checked
    against the bytes that follow, and the array viewed in place (no allocation a header
    could inflate, no pickles)."""
    start = _npy_data_offset(data)
    shape, fortran, dtype = _parse_npy_header(bytes(data[:start]))
    count = math.prod(shape)
    if count * dtype.itemsize != len(data) - start:
        raise BadInput(f"{len(data) - start} bytes of data do not hold {dtype}{list(shape)}")
    return np.frombuffer(data, dtype, count, start).reshape(shape, order="F" if fortran else "C")


def _npy_data_offset(data: bytes) -> int:
    """Where the array's bytes start: magic, version, header length, header."""
    if len(data) < 10 or data[:6] != b"\x93NUMPY":
        raise BadInput("not an .npy array: no magic string")
    if data[6] == 1:
        return 10 + int.from_bytes(data[8:10], "little")
    if data[6] in (2, 3) and len(data) >= 12:
        return 12 + int.from_bytes(data[8:12], "little")
    raise BadInput(f"not an .npy array: version {data[6]}")


@functools.lru_cache(maxsize=256)
def _parse_npy_header(head: bytes) -> tuple[tuple[int, ...], bool, np.dtype]:
    """numpy's own parse (a ``literal_eval``), done once per distinct header."""
    buf = io.BytesIO(head)
    try:
        version = np.lib.format.read_magic(buf)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read_header(buf, max_header_size=MAX_NPY_HEADER)
    except (ValueError, TypeError, EOFError, OSError) as exc:
        raise BadInput(f"not an .npy array: {exc}") from None
    if dtype.kind not in "fiu" or dtype.hasobject:
        raise BadInput(f"dtype {dtype} is not numeric")
    return shape, fortran, dtype
