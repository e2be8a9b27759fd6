"""The model runner role: follow the chain's best model, offer it, serve it, collect payment.

Each tick, per chain: when the model to serve (``meta.confirmed`` by default, ``meta.provisional``
with ``roles.runner.serve = "provisional"``) is one we do not serve, fetch it
by digest over content exchange (hash-checked) and serve it; keep a signed
``OfferService`` tx on chain that names our price, peer id and that digest (re-offered
when any of them changes); redeem the highest accepted voucher of every payer whose
channel has unredeemed value (one ``RedeemVoucher`` tx, resent if not included).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path

from chain.consensus import period_of
from chain.crypto import address_bytes
from chain.records import BestModel, ChainMeta
from chain.state import get_channel, get_meta, get_offer, get_problem
from chain.payloads import OfferService, RedeemVoucher

from daimon_node.daemon.chains import ChainHandle
from daimon_node.daemon.context import RoleContext
from daimon_node.market.service import InferService, Served
from daimon_node.market.vouchers import VoucherBook
from daimon_node.market.wire import INFER_LIMITS, INFER_PROTOCOL, InferCodec
from daimon_node.daemon.roles import next_tx
from daimon_node.proofs.sandbox import Sandbox

log = logging.getLogger(__name__)

RESEND_PERIODS = 2  # resend an offer or redemption not included after this many periods


def model_to_serve(meta: ChainMeta, serve: str) -> BestModel | None:
    """The model a runner follows: by default the confirmed one, which no season's judge can burn
    any more, so a paying user never pays for a model that may still be taken back; with
    ``serve = "provisional"``, the newest settled one. Without a sealed holdout every settled
    model is confirmed at once, and the two are the same."""
    return meta.confirmed if serve == "confirmed" else meta.provisional


@dataclass
class RunnerRole:
    price: int
    chain: str = ""  # chain id hex; "" = every followed chain
    fixed_model: Path | None = None  # serve this file instead of following (testing stale runners)
    serve: str = "confirmed"  # or "provisional" (config roles.runner.serve)
    service: InferService | None = None
    offer_sent: dict[bytes, tuple[tuple[int, bytes, bytes], int]] = field(default_factory=dict)
    fetch_failures: dict[bytes, int] = field(default_factory=dict)
    status: str = "idle"

    def attach(self, ctx: RoleContext) -> InferService:
        """Build the service over the node's chains and serve it on ``INFER_PROTOCOL``."""
        book = VoucherBook.load(ctx.data_dir / "runner_vouchers.json")

        def channel_of(chain_id: bytes, payer: bytes):  # type: ignore[no-untyped-def]
            handle = ctx.chain(chain_id)
            if handle is None or not handle.started:
                return None
            return get_channel(handle.state, payer, ctx.keys.address_bytes)

        def period_now(chain_id: bytes) -> int:
            handle = ctx.chain(chain_id)
            return period_of(handle.proposal.params, int(ctx.now())) if handle is not None else 0

        service = self.service = InferService(ctx.keys.address_bytes, book, Sandbox(), channel_of, period_now)
        ctx.serve(INFER_PROTOCOL, InferCodec(), INFER_LIMITS, service.handle)
        return service

    def close(self) -> None:
        if self.service is not None:
            self.service.sandbox.close()

    async def step(self, ctx: RoleContext, handle: ChainHandle) -> None:
        if not handle.started or self.service is None:
            return
        if self.chain and self.chain != handle.chain_id.hex():
            return
        state = handle.state
        params = get_problem(state).params
        period = period_of(params, int(ctx.now()))
        served = self.service.served.get(handle.chain_id)
        if self.fixed_model is not None:
            if served is None:
                model = self.fixed_model.read_bytes()
                self._serve(handle, model)
        else:
            best = model_to_serve(get_meta(state), self.serve)
            if best is None:
                self.status = f"waiting for a {self.serve} model"
                return
            if served is None or served.digest != best.digest:
                try:
                    model = await ctx.fetch_content(best.digest, params.max_model_bytes)
                except Exception as exc:  # not reachable yet: next tick
                    self.fetch_failures[best.digest] = self.fetch_failures.get(best.digest, 0) + 1
                    log.info("runner: model %s not fetched yet: %s", best.digest.hex()[:12], exc)
                    return
                if hashlib.sha256(model).digest() != best.digest:
                    log.warning("runner: fetched model does not hash to %s", best.digest.hex()[:12])
                    return
                ctx.content.pin(best.digest, "served model")
                self._serve(handle, model)
        served = self.service.served[handle.chain_id]
        await self._keep_offer(ctx, handle, served, period)
        await self._redeem(ctx, handle, period)

    def _serve(self, handle: ChainHandle, model: bytes) -> None:
        assert self.service is not None
        digest = hashlib.sha256(model).digest()
        params = get_problem(handle.state).params
        self.service.served[handle.chain_id] = Served(handle.chain_id, params, digest, model, self.price)
        self.status = f"serving {digest.hex()[:12]}"
        log.info("runner: serving model %s on %s at price %d", digest.hex()[:12], handle.chain_id.hex()[:12], self.price)

    async def _keep_offer(self, ctx: RoleContext, handle: ChainHandle, served: Served, period: int) -> None:
        peer_id = ctx.peer_id().encode()
        want = (served.price, peer_id, served.digest)
        current = get_offer(handle.state, ctx.keys.address_bytes)
        if current is not None and (current.offer.price, current.offer.peer_id, current.offer.model_digest) == want:
            return
        sent = self.offer_sent.get(handle.chain_id)
        if sent is not None and sent[0] == want and period - sent[1] < RESEND_PERIODS:
            return
        self.offer_sent[handle.chain_id] = (want, period)
        await ctx.submit_tx(handle, next_tx(ctx, handle, OfferService(*want)))

    async def _redeem(self, ctx: RoleContext, handle: ChainHandle, period: int) -> None:
        assert self.service is not None
        book = self.service.book
        me = ctx.keys.address_bytes
        for (chain_id, payer), voucher in list(book.accepted.items()):
            if chain_id != handle.chain_id:
                continue
            channel = get_channel(handle.state, payer, me)
            if channel is None or not channel.is_open or channel.epoch != voucher.epoch:
                continue
            if voucher.cumulative <= channel.redeemed:
                continue
            sent = book.redeem_sent.get((chain_id, payer))
            if sent is not None and sent[0] == voucher.cumulative and period - sent[1] < RESEND_PERIODS:
                continue
            book.redeem_sent[(chain_id, payer)] = (voucher.cumulative, period)
            log.info("runner: redeeming %d from %s", voucher.cumulative - channel.redeemed, address_bytes(voucher.payer).hex()[:12])
            await ctx.submit_tx(handle, next_tx(ctx, handle, RedeemVoucher(voucher)))
