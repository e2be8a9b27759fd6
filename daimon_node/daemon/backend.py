"""The node's side of JSON-RPC: ``NodeBackend`` answers ``daimon_*`` from the live node.

Reads come from the chains' head states and stores; submissions go through the
same mempool checks as gossip and are then gossiped, so a client's transaction
or proof is treated exactly like a peer's. Node events (new heads, proofs,
votes) reach WebSocket subscribers through the server's event hub, and the
node's counters are exported on ``/metrics``.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Literal

import trio

from chain.consensus import period_end, period_of, period_start
from chain.errors import DecodeError, ModelNotClaimed
from chain.records import Offer as OfferRecord
from chain.state import PREFIX_OFFER, get_account, get_meta, get_problem, get_reputation, iter_records
from chain.payloads import Transaction
from chain.proofs import PoI, Reveal, SeasonReveal, Vote
from chain.crypto import sha256
from chain.types import TestTuple
from daimon_node.daemon.chains import ChainHandle
from daimon_node.daemon.dashboard import block_json, dashboard_json
from daimon_node.daemon.mempool import Verdict
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
from daimon_node.rpc.errors import NotFound, Rejected
from daimon_node.rpc.events import EventHub
from daimon_node.rpc.metrics import MetricsRegistry
from daimon_node.rpc.server import RpcServer, ServerConfig

if TYPE_CHECKING:
    from daimon_node.daemon.node import Node

VERSION = "0.1.0"
MAX_RPC_CONTENT_BYTES = 64 * 2**20  # daimon_getContent answers at most this much (hex doubles it)


class NodeBackend:
    """Implements ``daimon_node.rpc.api.RpcBackend`` over a running ``Node``."""

    def __init__(self, node: "Node") -> None:
        self.node = node

    def _chain(self, chain: bytes) -> ChainHandle:
        handle = self.node.chains.get(chain)
        if handle is None:
            raise NotFound(f"unknown chain {chain.hex()}")
        return handle

    def _started(self, chain: bytes) -> ChainHandle:
        handle = self._chain(chain)
        if not handle.started:
            raise NotFound(f"chain {chain.hex()[:16]} has no Problem block yet")
        return handle

    async def list_problems(self) -> list[ProblemSummary]:
        return self.node.problems.summaries()

    async def get_problem(self, chain: bytes) -> dict[str, Any]:
        from daimon_node.proofs.problem_kit import problem_summary

        handle = self._chain(chain)
        summary = problem_summary(handle.proposal)
        summary["height"] = handle.store.height
        if handle.started:
            meta = get_meta(handle.state)
            summary["d_c_ppb"] = list(meta.d_c)
            summary["minted"] = str(meta.minted)
            summary["burned"] = str(meta.burned)
            tuples = get_problem(handle.state).tuples  # with those added during T_p: proofs need every one
            summary["tuples"] = [{"z_id": t.z_id.hex(), "del_id": t.del_id.hex(), "m": t.m, "y_t_len": len(t.y_t)}
                                 for t in tuples]
            summary["extra_tuples"] = [hex0x(t.encode()) for t in tuples[1:]]
            season = meta.season
            if season is not None:
                summary["season"] = {
                    "index": season.index, "start_period": season.start_period,
                    "sealed": season.holdout is not None, "sealed_ahead": season.sealed_ahead,
                    "improvements": season.improvement_count,
                    "locked_rewards": str(sum(e.amount for e in season.locked)),
                    "confirmed_error_ppb": season.confirmed_error_ppb,
                    "holdout": None if season.holdout is None else {
                        "z_h_id": hex0x(season.holdout.z_h_id), "m_h": season.holdout.m_h,
                        "commitment": hex0x(season.holdout.commitment)},
                    "confirmed_model": None if meta.confirmed is None else hex0x(meta.confirmed.digest),
                }
        return summary

    async def block_number(self, chain: bytes) -> int:
        return self._chain(chain).store.height

    async def get_block_by_number(self, chain: bytes, number: int) -> dict[str, Any] | None:
        block = self._chain(chain).store.get_block_by_height(number)
        return None if block is None else block_json(block)

    async def get_block_by_hash(self, chain: bytes, block_hash: bytes) -> dict[str, Any] | None:
        block = self._chain(chain).store.get_block(block_hash)
        return None if block is None else block_json(block)

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
        now = self.node.now()
        k = max(0, period_of(params, int(now)))
        end = period_end(params, k)
        return PeriodInfo(period=k, start=period_start(params, k), end=end, remaining=max(0.0, end - now))

    async def _submit(self, handle: ChainHandle, verdict: Verdict, what: str, reason: str) -> None:
        """A submission the pool did not accept is an error to the client, with the pool's reason."""
        if verdict is not Verdict.ACCEPT:
            self.node.metrics.rpc_rejected += 1
            word = "rejected" if verdict is Verdict.REJECT else "not accepted"
            raise Rejected(f"{what} {word}: {reason}", rule=handle.mempool.last_rule or None)

    async def send_raw_transaction(self, chain: bytes, raw: bytes) -> str:
        handle = self._started(chain)
        tx = self._decode(Transaction, raw, "transaction")
        verdict = await self.node.submit_tx(handle, tx)
        await self._submit(handle, verdict, "transaction", self._last_reason(handle))
        return hex0x(tx.hash)

    async def submit_proof(self, chain: bytes, raw: bytes) -> str:
        handle = self._started(chain)
        poi = self._decode(PoI, raw, "PoI")
        verdict = handle.mempool.add_poi(poi, handle.state, self.node.now())
        await self._submit(handle, verdict, "PoI", self._last_reason(handle))
        if verdict is Verdict.ACCEPT:
            await self.node.publish_proof(handle, raw)
        return hex0x(poi.hash)

    async def submit_vote(self, chain: bytes, raw: bytes) -> str:
        handle = self._started(chain)
        vote = self._decode(Vote, raw, "vote")
        verdict = handle.mempool.add_vote(vote, handle.state, self.node.now())
        await self._submit(handle, verdict, "vote", self._last_reason(handle))
        if verdict is Verdict.ACCEPT:
            await self.node.publish_vote(handle, raw)
        return hex0x(vote.poi_hash)

    async def submit_reveal(self, chain: bytes, raw: bytes) -> str:
        handle = self._started(chain)
        try:  # the contributor's season reveal travels the same way (issue 9)
            season_reveal = SeasonReveal.decode(raw)
        except DecodeError:
            season_reveal = None
        if season_reveal is not None:
            verdict = handle.mempool.add_season_reveal(season_reveal, handle.state)
            await self._submit(handle, verdict, "season reveal", self._last_reason(handle))
            if verdict is Verdict.ACCEPT:
                await self.node._publish(f"/daimon/{chain.hex()}/proofs", raw)
            return hex0x(season_reveal.chain_id)
        reveal = self._decode(Reveal, raw, "reveal")
        verdict = handle.mempool.add_reveal(reveal, handle.state, self.node.now())
        await self._submit(handle, verdict, "reveal", self._last_reason(handle))
        if verdict is Verdict.ACCEPT:
            await self.node._publish(f"/daimon/{chain.hex()}/proofs", raw)
        return hex0x(reveal.poi_hash)

    async def submit_test_tuple(self, chain: bytes, raw: bytes) -> str:
        handle = self._chain(chain)  # before the Problem block: T_p is when tuples are taken
        tup = self._decode(TestTuple, raw, "test tuple")
        verdict = handle.mempool.add_test_tuple(tup, handle.proposal, started=handle.started, now=self.node.now(),
                                                env=handle.env)
        await self._submit(handle, verdict, "test tuple", self._last_reason(handle))
        await self.node._publish(f"/daimon/{chain.hex()}/proofs", raw)
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
        self.node.content.put(raw)
        self.node.content.pin(digest, "submitted model")
        return hex0x(digest)

    async def get_content(self, content_id: bytes) -> str:
        """Content is public (any peer may fetch it over ``/daimon/content/1``); the RPC serves
        what this node holds so a CLI can prove against the season's ``Z_h`` and confirmed model."""
        store = self.node.content
        if not store.has(content_id):
            raise NotFound(f"this node holds no content {hex0x(content_id)}")
        return hex0x(await trio.to_thread.run_sync(lambda: store.get(content_id, MAX_RPC_CONTENT_BYTES)))

    def _decode(self, cls: type, raw: bytes, what: str) -> Any:
        try:
            return cls.decode(raw)  # type: ignore[attr-defined]
        except DecodeError as exc:
            self.node.metrics.rpc_rejected += 1
            raise Rejected(f"malformed {what}: {exc}") from None

    @staticmethod
    def _last_reason(handle: ChainHandle) -> str:
        return handle.mempool.last_reason or "invalid"

    async def peer_count(self) -> int:
        return self.node.p2p.peer_count()

    async def peers(self) -> list[PeerInfo]:
        return [PeerInfo(peer_id=s.peer_id, connected=s.connected, accepted=s.accepted, rejected=s.rejected,
                         ignored=s.ignored, deferred=s.deferred, penalty=s.penalty, banned_for_s=s.banned_for_s)
                for s in self.node.p2p.peers()]

    async def syncing(self) -> Literal[False] | list[SyncStatus]:
        return False if not self.node.sync_targets else [
            SyncStatus(chain=hex0x(c), current=cur, highest=hi) for c, (cur, hi) in self.node.sync_targets.items()
        ]

    async def node_info(self) -> NodeInfo:
        chains = [{"chain": hex0x(h.chain_id), "height": h.store.height, "head": hex0x(h.store.head)}
                  for h in self.node.chains.chains.values()]
        return NodeInfo(version=VERSION, peer_id=self.node.p2p.peer_id, peers=self.node.p2p.peer_count(),
                        healthy=True, chains=chains)  # type: ignore[typeddict-item]

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
        k = max(get_meta(state).period + 1, period_of(params, int(self.node.now())))
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

    async def _infer_call(self, chain: bytes, runner: bytes, req: list[Any]) -> tuple[str, list[Any]]:
        from chain.state import get_offer
        from p2p.errors import P2PError

        from daimon_node.market.service import INFER_PROTOCOL, InferError, request
        from daimon_node.rpc.errors import Unavailable

        offer = get_offer(self._started(chain).state, runner)
        if offer is None:
            raise NotFound(f"no offer from runner {runner.hex()}")
        peer = offer.offer.peer_id.decode(errors="replace")
        own = self.node.runner
        try:
            if own is not None and own.service is not None and peer == self.node.p2p.peer_id:
                from daimon_node.market.service import check_reply

                return peer, check_reply(await own.service.handle_request(req))
            stream = await self.node.p2p.open_stream(peer, INFER_PROTOCOL)
            return peer, await request(stream, req)
        except InferError as exc:
            raise Rejected(f"runner refused: {exc.code}: {exc.message}", rule=exc.code) from None
        except (P2PError, trio.TooSlowError, OSError) as exc:
            raise Unavailable(f"runner {peer[:16]} not reachable: {exc}") from None
        except Exception as exc:  # libp2p stream errors have no common base
            raise Unavailable(f"runner {peer[:16]} not reachable: {type(exc).__name__}: {exc}") from None

    async def infer_quote(self, chain: bytes, runner: bytes, payer: bytes) -> dict[str, Any]:
        peer, reply = await self._infer_call(chain, runner, ["quote", chain, payer])
        return {"runner": hex0x(runner), "peer_id": peer, "price": str(reply[1]), "model_digest": hex0x(reply[2]),
                "paid": str(reply[3]), "epoch": int(reply[4])}

    async def infer(self, chain: bytes, runner: bytes, voucher: bytes, inputs: bytes) -> dict[str, Any]:
        from daimon_node.market.service import parse_npy, scores_to_json

        peer, reply = await self._infer_call(chain, runner, ["infer", chain, voucher, inputs])
        scores = parse_npy(reply[2])
        return {"runner": hex0x(runner), "peer_id": peer, "model_digest": hex0x(reply[1]),
                "cumulative": str(reply[3]), **scores_to_json(scores)}

    # --- the web page ------------------------------------------------------------------------
    async def dashboard(self, chain: bytes) -> dict[str, Any]:
        return await dashboard_json(self, self._chain(chain))


def register_metrics(node: "Node", metrics: MetricsRegistry) -> None:
    """Node gauges read at scrape time, and the gossip verdict counters."""
    metrics.gauge("daimon_peers", "Connected peers", function=lambda: float(node.p2p.peer_count()))
    metrics.gauge("daimon_chains", "Chains followed", function=lambda: float(len(node.chains.chains)))
    metrics.gauge("daimon_uptime_seconds", "Seconds since start", function=lambda: time.time() - node.started_at)
    metrics.gauge("daimon_rpc_rejected", "Submissions refused over RPC",
                  function=lambda: float(node.metrics.rpc_rejected))
    metrics.gauge("daimon_p2p_bans", "Peers banned since start (penalty threshold or operator)",
                  function=lambda: float(node.p2p.bans_total))
    metrics.gauge("daimon_problems_forged", "Proposals refused from peers since start (hash is not the chain id)",
                  function=lambda: float(node.problems.forged))
    metrics.gauge("daimon_p2p_banned_peers", "Peers banned now",
                  function=lambda: float(sum(1 for s in node.p2p.peers() if s.banned_for_s > 0)))


def chain_gauges(node: "Node", metrics: MetricsRegistry) -> None:
    height = metrics.gauge("daimon_height", "Head height per chain", ["chain"])
    best = metrics.gauge("daimon_best_distance_ppb", "Best distance d_c (mean) per chain", ["chain"])
    gossip = metrics.gauge("daimon_gossip_messages", "Gossip messages by kind and verdict", ["kind", "verdict"])
    verify = metrics.gauge("daimon_verify_seconds_last", "Wall time of the last VERIFY")
    for handle in node.chains.chains.values():
        label = handle.chain_id.hex()[:16]
        height.labels(label).set(handle.store.height)
        if handle.started:
            d_c = get_meta(handle.state).d_c
            best.labels(label).set(sum(d_c) / len(d_c))
    for (kind, verdict), count in node.metrics.gossip.items():
        gossip.labels(kind, verdict).set(count)
    if node.metrics.verify_seconds:
        verify.set(node.metrics.verify_seconds[-1])


async def start_rpc(node: "Node", nursery: trio.Nursery) -> int:
    """Start the RPC server in ``nursery``; wire node events and metrics; return the port."""
    metrics = MetricsRegistry()
    events = EventHub(metrics=metrics)
    server = RpcServer(NodeBackend(node), config=ServerConfig(), events=events, metrics=metrics)
    register_metrics(node, metrics)
    node.subscribers.append(lambda event, chain, payload: events.publish(event, chain, payload))
    node.periodic.append(lambda: chain_gauges(node, metrics))
    port: int = await nursery.start(server.serve, node.config.rpc.host, node.config.rpc.port)
    return port
