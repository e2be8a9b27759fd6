"""The inference market (paper §VII-D): runners serve the best model over ``/daimon/infer/1``.

Payment is a unidirectional payment channel per (payer, runner), see docs/market.md:

1. the user locks a deposit on chain for one runner (``OpenChannel``);
2. for each call of N inputs it signs a ``Voucher`` whose ``cumulative`` amount is the
   previous one plus N times the runner's price per input (``wire.call_cost``), and sends
   it with the inputs;
3. the runner checks the voucher against the channel in its head state and its own
   record of what it already accepted (``VoucherBook``), runs the model in its warm
   sandbox session, and answers with its model digest and the scores;
4. the runner redeems its highest voucher on chain (``RedeemVoucher``) whenever it likes;
   the chain pays ``cumulative - redeemed`` once.

The service sees only typed requests (``market.wire``); the node serves it over
``p2p.reqresp`` with ``InferCodec``. A refusal is one ``InferError`` subclass
(``market.errors``), answered as a ``Refusal`` with its wire code.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Final

import numpy as np
import trio

from chain.crypto import address_bytes
from chain.records import Channel
from chain.types import InputSpec, ProblemParams

from daimon_node.market.errors import BadInput, InferError, NotServing, RunFailed
from daimon_node.market.vouchers import VoucherBook
from daimon_node.market.messages import (
    Inference,
    InferReplyT,
    InferRequest,
    InferRequestT,
    Quote,
    QuoteRequest,
    Refusal,
    call_cost,
    npy_bytes,
    parse_npy,
)
from daimon_node.proofs.problem_kit import is_within_range
from daimon_node.proofs.sandbox import Sandbox, SandboxError

log = logging.getLogger(__name__)

MAX_BATCH: Final[int] = 4096  # input rows per call


# --- inputs --------------------------------------------------------------------------------
def check_inputs(arr: np.ndarray, spec: InputSpec, max_rows: int = MAX_BATCH) -> np.ndarray:
    """A batch ``(N, *spec.shape)`` of the spec's dtype with every value in its range."""
    if str(arr.dtype) != spec.dtype:
        raise BadInput(f"dtype {arr.dtype}, the problem takes {spec.dtype}")
    if arr.ndim == len(spec.shape):
        arr = arr[None]
    if tuple(arr.shape[1:]) != tuple(spec.shape):
        raise BadInput(f"shape {list(arr.shape)}, the problem takes [N, {', '.join(map(str, spec.shape))}]")
    if not 1 <= arr.shape[0] <= max_rows:
        raise BadInput(f"{arr.shape[0]} rows; 1..{max_rows} per call")
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise BadInput("inputs hold NaN or infinity")
    if not is_within_range(arr, spec):
        raise BadInput(f"values in [{arr.min()}, {arr.max()}], the problem allows "
                       f"[{spec.range_num_low}/{spec.range_den}, {spec.range_num_high}/{spec.range_den}]")
    return np.ascontiguousarray(arr)


# --- the runner's service --------------------------------------------------------------------
@dataclass
class Served:
    """The model a runner serves on one chain, at ``price`` per input item."""

    chain_id: bytes
    params: ProblemParams
    digest: bytes
    model: bytes
    price: int


@dataclass
class InferService:
    """Answers ``/daimon/infer/1`` requests. Chain facts come from callables so tests and
    benchmarks can run it without a node."""

    runner: bytes  # our address
    book: VoucherBook
    sandbox: Sandbox
    channel_of: Callable[[bytes, bytes], Channel | None]  # (chain, payer address) -> channel
    period_of: Callable[[bytes], int]  # chain -> current period
    served: dict[bytes, Served] = field(default_factory=dict)
    calls: int = 0
    items: int = 0  # input rows scored (and paid for)
    refused: dict[str, int] = field(default_factory=dict)
    _limit: trio.Semaphore = field(default_factory=lambda: trio.Semaphore(4))

    async def handle(self, peer: str, request: InferRequestT) -> InferReplyT:
        """One typed request -> one typed reply; a refusal is a ``Refusal``, never an exception."""
        try:
            if isinstance(request, QuoteRequest):
                return self._quote(request)
            return await self._infer(request)
        except InferError as exc:
            self.refused[exc.wire_code] = self.refused.get(exc.wire_code, 0) + 1
            log.debug("infer request from %s refused: %s", peer, exc)
            return Refusal(exc.wire_code, exc.message)

    def _served(self, chain_id: bytes) -> Served:
        served = self.served.get(chain_id)
        if served is None:
            raise NotServing("no model served for this chain")
        return served

    def _quote(self, request: QuoteRequest) -> Quote:
        served = self._served(request.chain_id)
        channel = self.channel_of(served.chain_id, request.payer)
        paid = self.book.floor(served.chain_id, request.payer, channel)
        return Quote(served.price, served.digest, paid, channel.epoch if channel else 0)

    async def _infer(self, request: InferRequest) -> Inference:
        served = self._served(request.chain_id)
        inputs = check_inputs(parse_npy(request.inputs_npy), served.params.input_spec)  # before taking the payment
        voucher = request.voucher
        channel = self.channel_of(request.chain_id, address_bytes(voucher.payer))
        previous = self.book.accept(voucher, chain_id=request.chain_id, runner=self.runner,
                                    cost=call_cost(served.price, len(inputs)), channel=channel,
                                    period=self.period_of(request.chain_id))
        answered = False
        try:
            async with self._limit:
                scores = await self._score(served, inputs)
            answered = True
        except SandboxError as exc:
            raise RunFailed(str(exc)) from None
        finally:
            if not answered:  # a failed or cancelled run: no answer, no payment
                self.book.roll_back(voucher, previous)
        self.calls += 1
        self.items += len(inputs)
        return Inference(served.digest, npy_bytes(scores), voucher.cumulative)

    async def _score(self, served: Served, inputs: np.ndarray) -> np.ndarray:
        """Scores from the warm sandbox session of the served model (its pipes awaited in trio)."""
        return await self.sandbox.infer_async(served.digest, served.model, inputs, num_classes=served.params.num_classes,
                                  max_model_bytes=served.params.max_model_bytes,
                                  wall_seconds=max(1.0, served.params.max_infer_ms / 1000))


def scores_to_json(scores: np.ndarray) -> dict[str, Any]:
    return {"labels": [int(x) for x in np.argmax(scores, axis=1)], "scores_npy": npy_bytes(scores).hex()}
