"""The typed messages of ``/daimon/infer/1`` and the pricing rule, without any transport.

``price`` is per input item: a call of N inputs costs ``N * price`` (``call_cost``), and
the voucher sent with it must add at least that to what the payer already paid. Inputs
and scores travel as ``.npy`` bytes (``npy_bytes``, ``parse_npy``). ``market.wire`` maps
these to frames; the paying user's ``channel_client`` uses them without libp2p.
"""

from __future__ import annotations

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
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(arr), allow_pickle=False)
    return buf.getvalue()


def parse_npy(data: bytes) -> np.ndarray:
    """A numeric array from ``.npy`` bytes anyone sent: the header is parsed, its shape checked
    against the bytes that follow, and the array viewed in place (no allocation a header
    could inflate, no pickles)."""
    buf = io.BytesIO(data)
    try:
        version = np.lib.format.read_magic(buf)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read_header(buf, max_header_size=MAX_NPY_HEADER)
    except (ValueError, TypeError, EOFError, OSError) as exc:
        raise BadInput(f"not an .npy array: {exc}") from None
    if dtype.kind not in "fiu" or dtype.hasobject:
        raise BadInput(f"dtype {dtype} is not numeric")
    count = math.prod(shape)
    if count * dtype.itemsize != len(data) - buf.tell():
        raise BadInput(f"{len(data) - buf.tell()} bytes of data do not hold {dtype}{list(shape)}")
    return np.frombuffer(data, dtype, count, buf.tell()).reshape(shape, order="F" if fortran else "C")
