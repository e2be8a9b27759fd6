"""The inference market (paper §VII-D): runners serve the best model over ``/daimon/infer/1``.

Payment is a unidirectional payment channel per (payer, runner), see docs/market.md:

1. the user locks a deposit on chain for one runner (``OpenChannel``);
2. for each call it signs a ``Voucher`` whose ``cumulative`` amount is the previous one
   plus the runner's price, and sends it with the inputs;
3. the runner checks the voucher against the channel in its head state and its own
   record of what it already accepted (``VoucherBook``), runs the model in the sandbox,
   and answers with its model digest and the scores;
4. the runner redeems its highest voucher on chain (``RedeemVoucher``) whenever it likes;
   the chain pays ``cumulative - redeemed`` once.

Wire format (length-prefixed msgpack frames of ``p2p.framing``), one request per stream:

    ["quote", chain_id, payer_address]
        -> ["ok", price, model_digest, accepted_cumulative, channel_epoch]
    ["infer", chain_id, voucher_bytes, inputs_npy_bytes]
        -> ["ok", model_digest, scores_npy_bytes, cumulative]
    any  -> ["err", code, message]

Amounts travel as decimal strings (they reach 2^128). Nothing here knows libp2p:
the node registers ``InferService.handle`` through ``P2PNode.set_stream_handler``.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Final

import numpy as np
import trio

from chain.crypto import KeyPair, address_bytes
from chain.errors import DecodeError
from chain.signing import EMPTY_SIGNATURE, is_valid_signature, sign
from chain.records import Channel
from chain.payloads import Voucher
from chain.types import InputSpec, ProblemParams

from daimon_node.errors import DaimonError
from daimon_node.proofs.problem_kit import is_within_range
from daimon_node.proofs.sandbox import Sandbox, SandboxError

log = logging.getLogger(__name__)

INFER_PROTOCOL: Final[str] = "/daimon/infer/1"
MAX_REQUEST_BYTES: Final[int] = 16 * 1024 * 1024  # one request frame (inputs included)
MAX_REPLY_BYTES: Final[int] = 64 * 1024 * 1024
MAX_BATCH: Final[int] = 4096  # input rows per call
EXPIRY_MARGIN_PERIODS: Final[int] = 1  # refuse vouchers of channels closable within this many periods
REQUEST_TIMEOUT_S: Final[float] = 60.0


class InferError(DaimonError):
    """A refused or failed inference call; ``code`` is the wire code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


# --- inputs --------------------------------------------------------------------------------
def check_inputs(arr: np.ndarray, spec: InputSpec, max_rows: int = MAX_BATCH) -> np.ndarray:
    """A batch ``(N, *spec.shape)`` of the spec's dtype with every value in its range."""
    if str(arr.dtype) != spec.dtype:
        raise InferError("bad_input", f"dtype {arr.dtype}, the problem takes {spec.dtype}")
    if arr.ndim == len(spec.shape):
        arr = arr[None]
    if tuple(arr.shape[1:]) != tuple(spec.shape):
        raise InferError("bad_input", f"shape {list(arr.shape)}, the problem takes [N, {', '.join(map(str, spec.shape))}]")
    if not 1 <= arr.shape[0] <= max_rows:
        raise InferError("bad_input", f"{arr.shape[0]} rows; 1..{max_rows} per call")
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise InferError("bad_input", "inputs hold NaN or infinity")
    if not is_within_range(arr, spec):
        raise InferError("bad_input", f"values in [{arr.min()}, {arr.max()}], the problem allows "
                                      f"[{spec.range_num_low}/{spec.range_den}, {spec.range_num_high}/{spec.range_den}]")
    return np.ascontiguousarray(arr)


def npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(arr), allow_pickle=False)
    return buf.getvalue()


def parse_npy(data: bytes) -> np.ndarray:
    from daimon_node.proofs.problem_kit import load_npy

    try:
        return load_npy(data)
    except Exception as exc:  # anything a peer sends
        raise InferError("bad_input", f"not a numeric .npy array: {exc}") from None


# --- vouchers ------------------------------------------------------------------------------
def make_voucher(keys: KeyPair, chain_id: bytes, runner: bytes, epoch: int, cumulative: int) -> Voucher:
    return sign(Voucher(chain_id, runner, epoch, cumulative, keys.public_key, EMPTY_SIGNATURE), keys, chain_id)


@dataclass
class VoucherBook:
    """The runner's record of the highest voucher it accepted from each payer, per chain.

    Persisted (JSON of encoded vouchers) so a restart cannot be used to replay old
    vouchers against it.
    """

    path: Path | None = None
    accepted: dict[tuple[bytes, bytes], Voucher] = field(default_factory=dict)  # (chain, payer addr) -> voucher
    redeem_sent: dict[tuple[bytes, bytes], tuple[int, int]] = field(default_factory=dict)  # -> (cumulative, period)

    @classmethod
    def load(cls, path: Path | None) -> "VoucherBook":
        book = cls(path)
        if path is not None and path.exists():
            for raw in json.loads(path.read_text()):
                v = Voucher.decode(bytes.fromhex(raw))
                book.accepted[(v.chain_id, address_bytes(v.payer))] = v
        return book

    def save(self) -> None:
        if self.path is None:
            return
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps([v.encode().hex() for v in self.accepted.values()]))
        tmp.replace(self.path)

    def floor(self, chain_id: bytes, payer: bytes, channel: Channel | None) -> int:
        """What this payer has already paid in its channel's current epoch."""
        if channel is None:
            return 0
        prev = self.accepted.get((chain_id, payer))
        accepted = prev.cumulative if prev is not None and prev.epoch == channel.epoch else 0
        return max(accepted, channel.redeemed)

    def accept(self, voucher: Voucher, *, chain_id: bytes, runner: bytes, price: int,
               channel: Channel | None, period: int) -> Voucher | None:
        """Check ``voucher`` pays ``price`` more than before; record it; return the one it replaces.

        Raises ``InferError`` (forged, no_channel, stale_epoch, channel_expiring,
        overspent, replayed, underpaid).
        """
        if voucher.chain_id != chain_id or voucher.runner != runner:
            raise InferError("forged", "voucher is for another chain or runner")
        if not is_valid_signature(voucher, chain_id):
            raise InferError("forged", "bad voucher signature")
        payer = address_bytes(voucher.payer)
        if channel is None or not channel.is_open:
            raise InferError("no_channel", "no open channel from this payer; send OpenChannel first")
        if voucher.epoch != channel.epoch:
            raise InferError("stale_epoch", f"voucher epoch {voucher.epoch}, channel epoch {channel.epoch}")
        if period + EXPIRY_MARGIN_PERIODS >= channel.expires_period:
            raise InferError("channel_expiring", f"channel closable from period {channel.expires_period}")
        if voucher.cumulative > channel.deposit:
            raise InferError("overspent", f"voucher {voucher.cumulative} exceeds the deposit {channel.deposit}")
        floor = self.floor(chain_id, payer, channel)
        if voucher.cumulative <= floor:
            raise InferError("replayed", f"voucher {voucher.cumulative} not above what was paid ({floor})")
        if voucher.cumulative - floor < price:
            raise InferError("underpaid", f"voucher adds {voucher.cumulative - floor}, the price is {price}")
        key = (chain_id, payer)
        previous = self.accepted.get(key)
        self.accepted[key] = voucher
        self.save()
        return previous

    def roll_back(self, voucher: Voucher, previous: Voucher | None) -> None:
        """Forget ``voucher`` (the call it paid for failed on our side)."""
        key = (voucher.chain_id, address_bytes(voucher.payer))
        if self.accepted.get(key) == voucher:
            if previous is None:
                self.accepted.pop(key)
            else:
                self.accepted[key] = previous
            self.save()


# --- the runner's service --------------------------------------------------------------------
@dataclass
class Served:
    """The model a runner serves on one chain."""

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
    refused: dict[str, int] = field(default_factory=dict)
    _limit: trio.Semaphore = field(default_factory=lambda: trio.Semaphore(4))

    async def handle_request(self, req: list[Any]) -> list[Any]:
        """One request array -> one reply array (never raises for a peer's mistake)."""
        try:
            return await self._dispatch(req)
        except InferError as exc:
            self.refused[exc.code] = self.refused.get(exc.code, 0) + 1
            return ["err", exc.code, exc.message]

    async def _dispatch(self, req: list[Any]) -> list[Any]:
        if not req or not isinstance(req[0], str):
            raise InferError("bad_request", "a request is [op, ...]")
        op = req[0]
        if op == "quote" and len(req) == 3 and isinstance(req[1], bytes) and isinstance(req[2], bytes):
            served = self._served(req[1])
            channel = self.channel_of(served.chain_id, req[2])
            floor = self.book.floor(served.chain_id, req[2], channel)
            return ["ok", str(served.price), served.digest, str(floor), channel.epoch if channel else 0]
        if op == "infer" and len(req) == 4 and all(isinstance(x, bytes) for x in req[1:]):
            return await self._infer(req[1], req[2], req[3])
        raise InferError("bad_request", f"unknown request {op!r}/{len(req)}")

    def _served(self, chain_id: bytes) -> Served:
        served = self.served.get(chain_id)
        if served is None:
            raise InferError("not_serving", "no model served for this chain")
        return served

    async def _infer(self, chain_id: bytes, voucher_raw: bytes, inputs_raw: bytes) -> list[Any]:
        served = self._served(chain_id)
        spec = served.params.input_spec
        inputs = check_inputs(parse_npy(inputs_raw), spec)  # before taking the payment
        try:
            voucher = Voucher.decode(voucher_raw)
        except DecodeError as exc:
            raise InferError("forged", f"undecodable voucher: {exc}") from None
        channel = self.channel_of(chain_id, address_bytes(voucher.payer))
        previous = self.book.accept(voucher, chain_id=chain_id, runner=self.runner, price=served.price,
                                    channel=channel, period=self.period_of(chain_id))
        key = hashlib.sha256(inputs_raw).digest()
        try:
            async with self._limit:
                scores = await trio.to_thread.run_sync(lambda: self.sandbox.run(
                    served.model, [(key, inputs)], num_classes=served.params.num_classes,
                    max_model_bytes=served.params.max_model_bytes,
                    wall_seconds=max(1.0, served.params.max_infer_ms / 1000))[0])
        except SandboxError as exc:
            self.book.roll_back(voucher, previous)  # no answer, no payment
            raise InferError("run_failed", str(exc)) from None
        self.calls += 1
        return ["ok", served.digest, npy_bytes(scores), str(voucher.cumulative)]

    async def handle(self, stream: Any) -> None:
        """The libp2p stream handler: one request, one reply, under a deadline."""
        from p2p.framing import read_control, write_control

        try:
            with trio.fail_after(REQUEST_TIMEOUT_S):
                req = await read_control(stream, MAX_REQUEST_BYTES)
                reply = await self.handle_request(req)
                await write_control(stream, reply)
                await stream.close()
        except Exception as exc:  # a broken peer: drop its stream
            log.info("infer stream ended: %r", exc)
            try:
                await stream.reset()
            except Exception:
                pass


# --- the user's side -------------------------------------------------------------------------
async def request(stream: Any, req: list[Any]) -> list[Any]:
    """Send one request on an open ``/daimon/infer/1`` stream; return the reply (``InferError`` on err)."""
    from p2p.framing import read_control, write_control

    try:
        with trio.fail_after(REQUEST_TIMEOUT_S):
            await write_control(stream, req)
            reply = await read_control(stream, MAX_REPLY_BYTES)
    finally:
        try:
            await stream.close()
        except Exception:
            pass
    return check_reply(reply)


def check_reply(reply: list[Any]) -> list[Any]:
    if reply and reply[0] == "err":
        raise InferError(str(reply[1]) if len(reply) > 1 else "error", str(reply[2]) if len(reply) > 2 else "")
    if not reply or reply[0] != "ok":
        raise InferError("bad_reply", f"unexpected reply {str(reply)[:80]}")
    return reply


def scores_to_json(scores: np.ndarray) -> dict[str, Any]:
    return {"labels": [int(x) for x in np.argmax(scores, axis=1)], "scores_npy": npy_bytes(scores).hex()}
