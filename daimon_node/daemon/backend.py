"""The node's side of JSON-RPC: ``NodeBackend`` answers ``daimon_*`` from the live node.

Reads come from the chains' head states and stores; submissions go through the
same mempool checks as gossip and are then gossiped, so a client's transaction
or proof is treated exactly like a peer's. Node events (new heads, proofs,
votes) reach WebSocket subscribers through the server's event hub, and the
node's counters are exported on ``/metrics``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

import trio

from chain.consensus import period_end, period_of, period_start
from chain.crypto import sha256
from chain.errors import DecodeError, ModelNotClaimed
from chain.store_errors import ReceiptsMissing
from chain.records import Offer as OfferRecord, Reputation as RepRecord
from chain.state import (
    get_problem,
    PREFIX_OFFER,
    PREFIX_REPUTATION,
    get_account,
    get_meta,
    get_reputation,
    iter_records,
)
from chain.proofs import SeasonReveal
from p2p import ValidationResult
from daimon_node.daemon.chains import ChainHandle
from daimon_node.daemon.nodeapi import NodeAPI
from daimon_node.daemon.admission import POI, REVEAL, TUPLE, TX, VOTE, Message, MessageKind, describe
from daimon_node.rpc.api import (
    Balance,
    BestModel,
    BondInfo,
    LockedPart,
    Locks,
    NodeInfo,
    Offer,
    PeerInfo,
    PeriodInfo,
    ProblemSummary,
    Reputation,
    SyncStatus,
    hex0x,
)
from daimon_node.rpc import render
from daimon_node.rpc.errors import NotFound, Rejected, Unavailable
from daimon_node.rpc.events import EventHub
from daimon_node.rpc.metrics import MetricsRegistry
from daimon_node.rpc.server import RpcServer, ServerConfig

if TYPE_CHECKING:
    from daimon_node.market.messages import Inference, InferRequestT, Quote

VERSION = "0.1.0"
MAX_RPC_CONTENT_BYTES = 64 * 2**20  # daimon_getContent answers at most this much (hex doubles it)


class NodeBackend:
    """Implements ``daimon_node.rpc.api.RpcBackend`` over a running node's ``NodeAPI``."""

    def __init__(self, api: NodeAPI) -> None:
        self.api = api

    def _chain(self, chain: bytes) -> ChainHandle:
        handle = self.api.chain(chain)
        if handle is None:
            raise NotFound(f"unknown chain {chain.hex()}")
        return handle

    def _started(self, chain: bytes) -> ChainHandle:
        handle = self._chain(chain)
        if not handle.started:
            raise NotFound(f"chain {chain.hex()[:16]} has no Problem block yet")
        return handle

    async def list_problems(self) -> list[ProblemSummary]:
        return self.api.problem_summaries()

    async def get_problem(self, chain: bytes) -> dict[str, Any]:
        from daimon_node.proofs.problem_kit import problem_summary

        handle = self._chain(chain)
        summary = problem_summary(handle.proposal)
        summary["height"] = handle.store.height
        if handle.started:
            summary.update(render.problem_on_chain(get_meta(handle.state)))
            tuples = get_problem(handle.state).tuples  # with those added during T_p: proofs need every one
            summary["tuples"] = [{"z_id": t.z_id.hex(), "del_id": t.del_id.hex(), "m": t.m, "y_t_len": len(t.y_t)}
                                 for t in tuples]
            summary["extra_tuples"] = [hex0x(t.encode()) for t in tuples[1:]]
        return summary

    async def block_number(self, chain: bytes) -> int:
        return self._chain(chain).store.height

    async def get_block_by_number(self, chain: bytes, number: int) -> dict[str, Any] | None:
        block = self._chain(chain).store.get_block_by_height(number)
        return None if block is None else render.block_json(block)

    async def get_block_by_hash(self, chain: bytes, block_hash: bytes) -> dict[str, Any] | None:
        block = self._chain(chain).store.get_block(block_hash)
        return None if block is None else render.block_json(block)

    async def get_balance(self, chain: bytes, address: bytes) -> Balance:
        acct = get_account(self._started(chain).state, address)
        return Balance(spendable=str(acct.balance), locked=str(acct.locked))

    async def get_nonce(self, chain: bytes, address: bytes) -> int:
        """The next nonce to use: after the account's included and pooled transactions."""
        handle = self._started(chain)
        nonce = get_account(handle.state, address).nonce
        from chain.crypto import address_bytes

        pooled = [t.nonce for t in handle.mempool.txs.values() if address_bytes(t.sender) == address and t.nonce >= nonce]
        return max(pooled) + 1 if pooled else nonce

    async def best_model(self, chain: bytes) -> BestModel | None:
        handle = self._started(chain)
        meta = get_meta(handle.state)
        best = meta.provisional
        if best is None:
            return None
        block = handle.store.get_block_by_height(best.height)
        return BestModel(
            model_digest=hex0x(best.digest), prover=hex0x(best.owner),
            distance_ppb=sum(best.d_ppb) // len(best.d_ppb),
            period=block.header.period if block else 0, height=best.height,
        )

    async def confirmed_model(self, chain: bytes) -> BestModel | None:
        handle = self._started(chain)
        confirmed = get_meta(handle.state).confirmed
        if confirmed is None:
            return None
        block = handle.store.get_block_by_height(confirmed.height)
        return BestModel(
            model_digest=hex0x(confirmed.digest), prover=hex0x(confirmed.owner),
            distance_ppb=sum(confirmed.d_ppb) // len(confirmed.d_ppb),
            period=block.header.period if block else 0, height=confirmed.height,
        )

    async def get_locks(self, chain: bytes, address: bytes) -> Locks:
        from chain.locks import locked_parts

        handle = self._started(chain)
        state = handle.state
        acct = get_account(state, address)
        parts = [LockedPart(kind=p.kind, amount=str(p.amount), free_from=p.free_from, action=p.action,
                            ref=hex0x(p.ref) if p.ref else None, season=p.season if p.season >= 0 else None)
                 for p in locked_parts(state, address).parts]
        period = (await self.period(chain))["period"]
        return Locks(address=hex0x(address), period=period, spendable=str(acct.balance), locked=str(acct.locked),
                     parts=parts)

    async def get_bond(self, chain: bytes, validator: bytes) -> BondInfo | None:
        from chain.crypto import address_bytes
        from chain.state import get_bond

        bond = get_bond(self._started(chain).state, validator)
        if bond is None:
            return None
        return BondInfo(validator=hex0x(validator), address=hex0x(address_bytes(validator)), amount=str(bond.amount),
                        since_height=bond.since_height, unbond_period=bond.unbond_period)

    async def period(self, chain: bytes) -> PeriodInfo:
        params = self._chain(chain).proposal.params
        now = self.api.now()
        k = max(0, period_of(params, int(now)))
        end = period_end(params, k)
        return PeriodInfo(period=k, start=period_start(params, k), end=end, remaining=max(0.0, end - now))

    async def _admit(self, chain: bytes, kind: MessageKind, raw: bytes, before_start: bool = False) -> Message:
        """A client's submission through the node's one admission path; a refusal is an error to
        the client, with the pool's reason and the broken rule."""
        handle = self._chain(chain) if before_start else self._started(chain)
        admission = await self.api.submit(handle, kind, raw)
        message = admission.message
        if admission.accepted and message is not None:
            return message
        if message is None:
            raise Rejected(f"malformed {kind.what}: {admission.reason}")
        word = "rejected" if admission.verdict is ValidationResult.REJECT else "not accepted"
        raise Rejected(f"{describe(message)} {word}: {admission.reason}", rule=admission.rule or None)

    async def send_raw_transaction(self, chain: bytes, raw: bytes) -> str:
        tx = await self._admit(chain, TX, raw)
        return hex0x(tx.hash)

    async def submit_proof(self, chain: bytes, raw: bytes) -> str:
        poi = await self._admit(chain, POI, raw)
        return hex0x(poi.hash)

    async def submit_vote(self, chain: bytes, raw: bytes) -> str:
        await self._admit(chain, VOTE, raw)
        return hex0x(sha256(raw))  # the vote's own id (every vote on one PoI shares its poi_hash)

    async def submit_reveal(self, chain: bytes, raw: bytes) -> str:
        """A prover's reveal, or the contributor's season reveal (issue 9), on the proofs topic."""
        reveal = await self._admit(chain, REVEAL, raw)
        return hex0x(reveal.chain_id if isinstance(reveal, SeasonReveal) else reveal.poi_hash)

    async def submit_test_tuple(self, chain: bytes, raw: bytes) -> str:
        """An extra test tuple, taken only during T_p (before the Problem block), on the proofs topic."""
        await self._admit(chain, TUPLE, raw, before_start=True)
        return hex0x(sha256(raw))

    async def submit_model(self, chain: bytes, raw: bytes, prover: bytes) -> str:
        """Keep and serve a model so validators can fetch it by digest.

        Only a model that ``prover`` claimed (``H(prover || digest)``) on chain or in a pooled
        RegisterDigest tx, and within the problem's size limit, is stored (and pinned): the
        RPC cannot be used to fill the node's disk with arbitrary bytes.
        """
        import hashlib

        from chain.state import get_digest
        from chain.payloads import RegisterDigest
        from chain.proofs import model_claim

        handle = self._started(chain)
        limit = handle.proposal.params.max_model_bytes
        if len(raw) > limit:
            raise Rejected(f"model of {len(raw)} bytes exceeds the problem's limit of {limit}")
        digest = hashlib.sha256(raw).digest()
        claim = model_claim(prover, digest)
        pooled = any(isinstance(t.payload, RegisterDigest) and t.payload.claim == claim
                     for t in handle.mempool.txs.values())
        if get_digest(handle.state, claim) is None and not pooled:
            raise Rejected("claim the model first (daimon-node model register): no H(prover || digest) "
                           "on chain or pooled", rule=ModelNotClaimed.__name__)
        self.api.content().put(raw)
        self.api.content().pin(digest, "submitted model")
        return hex0x(digest)

    async def get_content(self, content_id: bytes) -> str:
        """Content is public (any peer may fetch it over ``/daimon/content/1``); the RPC serves
        what this node holds so a CLI can prove against the season's ``Z_h`` and confirmed model."""
        store = self.api.content()
        if not store.has(content_id):
            raise NotFound(f"this node holds no content {hex0x(content_id)}")
        return hex0x(await trio.to_thread.run_sync(lambda: store.get(content_id, MAX_RPC_CONTENT_BYTES)))

    async def peer_count(self) -> int:
        return self.api.peer_count()

    async def peers(self) -> list[PeerInfo]:
        return [PeerInfo(peer_id=s.peer_id, connected=s.connected, accepted=s.accepted, rejected=s.rejected,
                         ignored=s.ignored, deferred=s.deferred, penalty=s.penalty, banned_for_s=s.banned_for_s)
                for s in self.api.peers()]

    async def syncing(self) -> Literal[False] | list[SyncStatus]:
        targets = self.api.sync_status()
        return False if not targets else [
            SyncStatus(chain=hex0x(c), current=cur, highest=hi) for c, (cur, hi) in targets.items()
        ]

    async def node_info(self) -> NodeInfo:
        chains = [{"chain": hex0x(h.chain_id), "height": h.store.height, "head": hex0x(h.store.head),
                   "gossip_peers": self.api.gossip_peers(h.chain_id)} for h in self.api.chain_list()]
        return NodeInfo(version=VERSION, peer_id=self.api.peer_id(), peers=self.api.peer_count(),
                        healthy=True, chains=chains, discovery=self.api.discovery())  # type: ignore[typeddict-item]

    async def get_offers(self, chain: bytes) -> list[Offer]:
        state = self._started(chain).state
        return [
            Offer(provider=hex0x(addr), price=str(rec.offer.price), peer_id=rec.offer.peer_id.decode(errors="replace"),
                  model_digest=hex0x(rec.offer.model_digest))
            for addr, rec in iter_records(state, PREFIX_OFFER, OfferRecord)
        ]

    async def get_reputation(self, chain: bytes, address: bytes) -> Reputation:
        rep = get_reputation(self._started(chain).state, address)
        return Reputation(address=hex0x(address), score=rep.score, ratings=rep.up + rep.down)

    async def get_committers(self, chain: bytes) -> dict[str, Any]:
        """The committer set in force at the clock's period, the next in-turn key, the versions
        already scheduled after it, and each bonded key's record (issue 17)."""
        from chain.committers import (EXIT_NAMES, PREFIX_COMMITTER, CommitterRecord, committers_at, get_schedule,
                                      is_fixed_set)
        from chain.crypto import address_bytes
        from chain.state import iter_records

        handle = self._started(chain)
        state, params = handle.state, handle.proposal.params
        k = max(get_meta(state).period + 1, period_of(params, int(self.api.now())))
        members = committers_at(state, params, k)
        out: dict[str, Any] = {
            "period": k, "fixed": is_fixed_set(params), "bond": str(params.committer_bond),
            "delay_periods": params.committer_delay, "miss_limit": params.committer_miss_limit,
            "in_force": [hex0x(m) for m in members], "in_turn": hex0x(members[k % len(members)]),
            "scheduled": [], "records": [],
        }
        if is_fixed_set(params):
            return out
        out["scheduled"] = [{"from_period": v.from_period, "members": [hex0x(m) for m in v.members]}
                            for v in get_schedule(state).versions if v.from_period > k]
        out["records"] = [{"committer": hex0x(key), "address": hex0x(address_bytes(key)), "bond": str(rec.bond),
                           "misses": rec.misses, "until": rec.until, "status": EXIT_NAMES[rec.exit]}
                          for key, rec in iter_records(state, PREFIX_COMMITTER, CommitterRecord)]
        return out

    # --- the market (docs/market.md) --------------------------------------------------------
    async def get_channel(self, chain: bytes, payer: bytes, runner: bytes) -> dict[str, Any] | None:
        from chain.state import get_channel

        ch = get_channel(self._started(chain).state, payer, runner)
        if ch is None:
            return None
        return {"payer": hex0x(payer), "runner": hex0x(runner), "deposit": str(ch.deposit),
                "redeemed": str(ch.redeemed), "expires_period": ch.expires_period, "epoch": ch.epoch,
                "open": ch.is_open}

    async def _infer_call(self, chain: bytes, runner: bytes, request: InferRequestT) -> tuple[str, Quote | Inference]:
        """Send ``request`` to the runner with that address (its offer names its peer id); its answer,
        or its refusal as ``Rejected`` with the refusal's code as ``rule``."""
        from chain.state import get_offer
        from p2p.errors import P2PError

        from daimon_node.market.messages import Refusal

        offer = get_offer(self._started(chain).state, runner)
        if offer is None:
            raise NotFound(f"no offer from runner {runner.hex()}")
        peer = offer.offer.peer_id.decode(errors="replace")
        try:
            reply = await self.api.runner_call(peer, request)
        except P2PError as exc:
            raise Unavailable(f"runner {peer[:16]} not reachable: {exc}") from None
        if isinstance(reply, Refusal):
            raise Rejected(f"runner refused: {reply.code}: {reply.message}", rule=reply.code)
        return peer, reply

    async def infer_quote(self, chain: bytes, runner: bytes, payer: bytes) -> dict[str, Any]:
        from daimon_node.market.messages import Quote, QuoteRequest

        peer, reply = await self._infer_call(chain, runner, QuoteRequest(chain, payer))
        if not isinstance(reply, Quote):
            raise Unavailable(f"runner {peer[:16]} answered a quote with an inference")
        return {"runner": hex0x(runner), "peer_id": peer, "price": str(reply.price),
                "model_digest": hex0x(reply.model_digest), "paid": str(reply.paid), "epoch": reply.epoch}

    async def infer(self, chain: bytes, runner: bytes, voucher: bytes, inputs: bytes) -> dict[str, Any]:
        from chain.payloads import Voucher

        from daimon_node.market.errors import InferError
        from daimon_node.market.messages import Inference, InferRequest, parse_npy
        from daimon_node.market.service import scores_to_json

        try:
            request = InferRequest(chain, Voucher.decode(voucher), inputs)
        except DecodeError as exc:
            raise Rejected(f"undecodable voucher: {exc}", rule="forged") from None
        peer, reply = await self._infer_call(chain, runner, request)
        if not isinstance(reply, Inference):
            raise Unavailable(f"runner {peer[:16]} answered an inference with a quote")
        try:
            scores = parse_npy(reply.scores_npy)
        except InferError as exc:
            raise Unavailable(f"runner {peer[:16]} sent unreadable scores: {exc}") from None
        return {"runner": hex0x(runner), "peer_id": peer, "model_digest": hex0x(reply.model_digest),
                "cumulative": str(reply.cumulative), **scores_to_json(scores)}

    # --- the web page ------------------------------------------------------------------------
    async def dashboard(self, chain: bytes) -> dict[str, Any]:
        """The page's view of a chain, from the head state and the stored receipts (nothing executes)."""
        handle = self._chain(chain)
        out = render.dashboard_frame(chain, handle.proposal.params, handle.store.height, await self.period(chain))
        if not handle.started:
            return out
        meta = get_meta(handle.state)
        best = await self.best_model(chain)
        out.update(best=best, d_c_ppb=list(meta.d_c), minted=str(meta.minted), burned=str(meta.burned))
        try:
            out.update(await trio.to_thread.run_sync(lambda: chain_rows(handle)))
        except ReceiptsMissing as exc:
            raise Unavailable(str(exc)) from None
        out["offers"] = await self._offer_rows(chain, best)
        out["reputation"] = render.reputation_rows(iter_records(handle.state, PREFIX_REPUTATION, RepRecord))
        return out

    async def _offer_rows(self, chain: bytes, best: BestModel | None) -> list[dict[str, Any]]:
        """Runner offers with their reputation, and whether each serves the best model."""
        rows = []
        for offer in await self.get_offers(chain):
            rep = await self.get_reputation(chain, bytes.fromhex(offer["provider"][2:]))
            rows.append(dict(offer, reputation=rep["score"], ratings=rep["ratings"],
                             current=best is not None and offer["model_digest"] == best["model_digest"]))
        return rows


def chain_rows(handle: ChainHandle) -> dict[str, Any]:
    """History, reward totals and the recent blocks, from the canonical chain's stored receipts.

    Every receipt is small; only the headers of settling blocks and the last
    ``RECENT_BLOCKS`` blocks are read in full. ``ReceiptsMissing`` for a store from
    before receipts that the node could not rebuild.
    """
    store, height = handle.store, handle.store.height
    tally = render.DashboardTally.start(handle.proposal.params)
    recent = []
    for h in range(height + 1):
        block_hash, receipt = store.receipt_at(h)
        if h > height - render.RECENT_BLOCKS:
            block = store.get_block(block_hash)
            assert block is not None  # a canonical hash names a stored block (the store checks at open)
            recent.append(render.block_with_receipt(block, receipt))
            tally.add(block.header, receipt)
        elif receipt.settlement is not None:
            tally.add(store.get_header(block_hash), receipt)
    return {**tally.json(), "blocks": recent[::-1]}


def register_metrics(api: NodeAPI, metrics: MetricsRegistry) -> None:
    """Node gauges read at scrape time, and the gossip verdict counters."""
    metrics.gauge("daimon_peers", "Connected peers", function=lambda: float(api.peer_count()))
    metrics.gauge("daimon_chains", "Chains followed", function=lambda: float(len(api.chain_list())))
    metrics.gauge("daimon_uptime_seconds", "Seconds since start", function=api.uptime_s)
    metrics.gauge("daimon_rpc_rejected", "Submissions refused over RPC",
                  function=lambda: float(api.counters().rpc_rejected))
    metrics.gauge("daimon_p2p_bans", "Peers banned since start (penalty threshold or operator)",
                  function=lambda: float(api.bans_total()))
    metrics.gauge("daimon_problems_forged", "Proposals refused from peers since start (hash is not the chain id)",
                  function=lambda: float(api.problems_forged()))
    metrics.gauge("daimon_p2p_banned_peers", "Peers banned now",
                  function=lambda: float(sum(1 for s in api.peers() if s.banned_for_s > 0)))


def chain_gauges(api: NodeAPI, metrics: MetricsRegistry) -> None:
    height = metrics.gauge("daimon_height", "Head height per chain", ["chain"])
    best = metrics.gauge("daimon_best_distance_ppb", "Best distance d_c (mean) per chain", ["chain"])
    gossip = metrics.gauge("daimon_gossip_messages", "Gossip messages by kind and verdict", ["kind", "verdict"])
    verify = metrics.gauge("daimon_verify_seconds_last", "Wall time of the last VERIFY")
    for handle in api.chain_list():
        label = handle.chain_id.hex()[:16]
        height.labels(label).set(handle.store.height)
        if handle.started:
            d_c = get_meta(handle.state).d_c
            best.labels(label).set(sum(d_c) / len(d_c))
    counters = api.counters()
    for (kind, verdict), count in counters.gossip.items():
        gossip.labels(kind, verdict).set(count)
    if counters.verify_seconds:
        verify.set(counters.verify_seconds[-1])


async def start_rpc(api: NodeAPI, nursery: trio.Nursery, host: str, port: int) -> int:
    """Start the RPC server in ``nursery``; wire node events and metrics; return the port."""
    metrics = MetricsRegistry()
    events = EventHub(metrics=metrics)
    server = RpcServer(NodeBackend(api), config=ServerConfig(), events=events, metrics=metrics)
    register_metrics(api, metrics)
    api.listen(lambda event, chain, payload: events.publish(event, chain, payload))
    api.every_second(lambda: chain_gauges(api, metrics))
    bound: int = await nursery.start(server.serve, host, port)
    return bound
