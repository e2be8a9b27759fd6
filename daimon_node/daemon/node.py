"""The daemon: one trio nursery running the network, the chains, the roles and the RPC.

``Node.run`` wires the parts (trinity-style: ``__init__`` only builds, ``run``
starts the services): the libp2p node, one set of validated gossip topics per
followed chain, a sync loop that catches up from peers, a tick loop that steps
the enabled roles against the injectable clock, and the JSON-RPC server.
Bad input from a peer is rejected, counted and never crashes the node. A write
the data directory refuses does stop it: ``StorageFailure`` (``DiskFull``) leaves
``run`` from whichever task met it, and the CLI prints it as one line.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Final

import trio

from chain import constants as C
from chain.errors import ChainError, DecodeError
from chain.state import is_ejected
from chain.payloads import ReportEquivocation, Transaction
from chain.proofs import PoI, Reveal, SeasonReveal, Vote
from chain.types import Proposal, TestTuple
from chain.crypto import KeyPair
from p2p import (
    PROBLEMS_TOPIC,
    ContentStore,
    GossipMessage,
    P2PConfig,
    P2PError,
    P2PNode,
    ValidationResult,
    chain_topic,
)

from daimon_node.daemon.chains import ChainHandle, ChainManager, ImportVerdict, data_dir_writes, decode_proposal
from daimon_node.clock import Clock, SystemClock
from daimon_node.config import NodeConfig
from daimon_node.errors import DaimonError, StorageFailure
from daimon_node.keystore import load_key
from daimon_node.daemon.mempool import Verdict, decode_proof_message
from daimon_node.daemon.problems import ProblemDirectory
from daimon_node.daemon.sync import ChainSync
from daimon_node.daemon.roles import ContributorRole, ImproverRole, ValidatorRole, next_tx, step_committer
from daimon_node.proofs.sandbox import Sandbox

log = logging.getLogger(__name__)

TICK_S = 0.25
REJUDGE_INTERVAL_S = 1.0

class NodeStartError(DaimonError):
    """The node cannot start: a port is taken, the data directory is unusable..."""


_VERDICT = {Verdict.ACCEPT: ValidationResult.ACCEPT, Verdict.REJECT: ValidationResult.REJECT,
            Verdict.IGNORE: ValidationResult.IGNORE}


# Gossip caps from the protocol's own table (``chain.constants``): a problem's largest PoI,
# reveal, season reveal and block are checked against the same numbers when it is created, so
# every valid object fits the topic that carries it (p2p keeps its own generic defaults).
TOPIC_CAPS: Final[dict[str, int]] = {
    "proofs": C.MAX_PROOF_MESSAGE_BYTES,
    "votes": C.MAX_VOTE_MESSAGE_BYTES,
    "blocks": C.MAX_BLOCK_MESSAGE_BYTES,
    "txs": C.MAX_TX_MESSAGE_BYTES,
    "problems": C.MAX_PROBLEM_MESSAGE_BYTES,
}


@dataclass
class NodeMetrics:
    gossip: dict[tuple[str, str], int] = field(default_factory=dict)  # (kind, verdict) -> count
    rpc_rejected: int = 0
    verify_seconds: list[float] = field(default_factory=list)

    def count(self, kind: str, verdict: str) -> None:
        key = (kind, verdict)
        self.gossip[key] = self.gossip.get(key, 0) + 1


class Node:
    """A DaiMoN node: build it from a config, then ``await node.run()`` in a nursery."""

    def __init__(self, config: NodeConfig, *, clock: Clock | None = None) -> None:
        self.config = config
        self.clock: Clock = clock or SystemClock()
        self.data_dir = config.data_dir
        self.keys: KeyPair = load_key(self.data_dir)
        with data_dir_writes():
            self.content = ContentStore(self.data_dir / "content")
            self.chains = ChainManager(self.data_dir, self.content, self.clock, config.chain.clock_drift_s)
        self.problems = ProblemDirectory(self.chains, self._follows)  # serves and learns problems
        self.p2p = P2PNode(
            P2PConfig(seed=self.keys.seed, content_dir=self.data_dir / "content",
                      listen_addr=config.p2p.listen, bootstrap=tuple(config.p2p.bootstrap),
                      sync_max_item_bytes=C.MAX_BLOCK_MESSAGE_BYTES,
                      announce=tuple(config.p2p.announce),
                      problems_max_proposal_bytes=C.MAX_PROBLEM_MESSAGE_BYTES),
            sync_provider=self.chains, store=self.content, problem_provider=self.problems)
        self.sandbox = Sandbox()
        self.metrics = NodeMetrics()
        self.started_at = time.time()
        self.subscribers: list[Callable[[str, bytes, dict[str, Any]], None]] = []
        self.validator = ValidatorRole() if config.roles.validator.enabled else None
        self.improver = (ImproverRole([Path(p) for p in config.roles.improver.models])
                         if config.roles.improver.enabled else None)
        contrib = config.roles.contributor
        self.contributor = (ContributorRole(Path(contrib.problem_dir),
                                            secret_file=Path(contrib.secret_file) if contrib.secret_file else None,
                                            reveal=contrib.reveal)
                            if contrib.enabled else None)
        self.cheater = None
        if config.roles.cheater.enabled:  # a lookup-table cheater (tests and the demo, issue 9)
            from daimon_node.harness.cheater import CheaterRole

            ch = config.roles.cheater
            self.cheater = CheaterRole(ImproverRole([]), self.data_dir / "cheater", rounds=ch.rounds,
                                       max_seconds=ch.max_seconds, wait_for_best=ch.wait_for_best,
                                       after_period=ch.after_period)
        self.runner = None
        if config.roles.runner.enabled:  # a model runner (issue 8, docs/market.md)
            from daimon_node.market.service import INFER_PROTOCOL
            from daimon_node.daemon.runner import RunnerRole

            rc = config.roles.runner
            self.runner = RunnerRole(rc.price, rc.chain, Path(rc.model) if rc.model else None, serve=rc.serve)
            self.p2p.set_stream_handler(INFER_PROTOCOL, self.runner.attach(self).handle)
        self._fetching: set[bytes] = set()
        self._joined: set[bytes] = set()
        self._sync_wakeup = trio.Event()
        self.sync = ChainSync(self)
        self.rpc_port: int | None = None
        self.sync_targets: dict[bytes, tuple[int, int]] = {}  # chain -> (our height, peer's), while behind
        self.periodic: list[Callable[[], None]] = []  # called about once a second (metrics)
        if self.contributor is not None:
            self.contributor.load_content(self.content)
            proposal = decode_proposal((self.contributor.problem_dir / "proposal.bin").read_bytes())
            self.chains.add_proposal(proposal)

    # --- RoleContext ---------------------------------------------------------------
    def now(self) -> float:
        return self.clock.now()

    def emit(self, event: str, chain_id: bytes, payload: dict[str, Any]) -> None:
        for fn in list(self.subscribers):
            try:
                fn(event, chain_id, payload)
            except Exception:  # a subscriber's bug must not stop the node
                log.exception("event subscriber failed")

    async def submit_tx(self, handle: ChainHandle, tx: Transaction) -> Verdict:
        verdict = handle.mempool.add_tx(tx, handle.state) if handle.started else Verdict.IGNORE
        if verdict is Verdict.ACCEPT:
            self._emit_tx(handle, tx)
            await self._publish(chain_topic(handle.chain_id, "txs"), tx.encode())
        return verdict

    async def publish_block(self, handle: ChainHandle, block_bytes: bytes) -> None:
        report = self.chains.import_block(handle, block_bytes)
        if report.verdict is ImportVerdict.ACCEPTED:
            log.info("sealed block %d of %s", handle.store.height, handle.chain_id.hex()[:12])
            self._on_imported(handle, report)
            await self._publish(chain_topic(handle.chain_id, "blocks"), block_bytes)
        elif report.verdict is not ImportVerdict.KNOWN:
            log.error("own block not importable: %s %s", report.verdict, report.error)

    async def publish_proof(self, handle: ChainHandle, data: bytes) -> None:
        self._accept_proof(handle, decode_proof_message(data))
        await self._publish(chain_topic(handle.chain_id, "proofs"), data)

    async def publish_vote(self, handle: ChainHandle, data: bytes) -> None:
        vote = Vote.decode(data)
        handle.mempool.add_vote(vote, handle.state, self.now())
        self.emit("votes", handle.chain_id, {"poi": vote.poi_hash.hex(), "validator": vote.validator.hex()})
        await self._publish(chain_topic(handle.chain_id, "votes"), data)

    async def fetch_content(self, content_id: bytes, max_bytes: int) -> bytes:
        if not self.content.has(content_id):
            with trio.fail_after(60), data_dir_writes():
                await self.p2p.fetch_content(content_id, max_bytes)
        return self.content.get(content_id, max_bytes)

    async def _publish(self, topic: str, data: bytes) -> None:
        try:
            await self.p2p.publish(topic, data)
        except P2PError as exc:
            log.warning("publish on %s failed: %s", topic, exc)

    # --- running ---------------------------------------------------------------------
    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                await nursery.start(self.p2p.run)
                if not self.p2p.listen_addrs():
                    raise NodeStartError(f"p2p cannot listen on {self.config.p2p.listen} (address in use?)")
                await self.p2p.subscribe(PROBLEMS_TOPIC, self._on_problem_msg, self._validate_problem,
                                         max_size=TOPIC_CAPS["problems"])
                for handle in list(self.chains.chains.values()):
                    await self._join(handle, nursery)
                if self.config.rpc.enabled:
                    from daimon_node.daemon.backend import start_rpc

                    self.rpc_port = await start_rpc(self, nursery)
                    with data_dir_writes():
                        (self.data_dir / "rpc.port").write_text(str(self.rpc_port))
                with data_dir_writes():
                    (self.data_dir / "p2p.addrs").write_text("\n".join(self.p2p.listen_addrs()) + "\n")
                nursery.start_soon(self._tick_loop)
                nursery.start_soon(self.sync.run)
                nursery.start_soon(self.problems.run, self.p2p, self.follow_proposal)
                log.info("node %s up: p2p %s (announced %s) rpc %s", self.keys.address[:12], self.p2p.listen_addrs(),
                         self.p2p.announced_addrs(), self.rpc_port)
                task_status.started()
        finally:
            self.sandbox.close()
            if self.runner is not None:
                self.runner.close()
            self.chains.close()

    async def _join(self, handle: ChainHandle, nursery: trio.Nursery) -> None:
        """Subscribe to a chain's topics and fetch what it needs."""
        if handle.chain_id in self._joined:
            return
        self._joined.add(handle.chain_id)
        cid = handle.chain_id
        await self.p2p.subscribe(chain_topic(cid, "blocks"), self._noop, self._validator(handle, self._validate_block),
                                 max_size=TOPIC_CAPS["blocks"])
        await self.p2p.subscribe(chain_topic(cid, "txs"), self._noop, self._validator(handle, self._validate_tx),
                                 max_size=TOPIC_CAPS["txs"])
        await self.p2p.subscribe(chain_topic(cid, "proofs"), self._noop, self._validator(handle, self._validate_proof),
                                 max_size=TOPIC_CAPS["proofs"])
        await self.p2p.subscribe(chain_topic(cid, "votes"), self._noop, self._validator(handle, self._validate_vote),
                                 max_size=TOPIC_CAPS["votes"])
        nursery.start_soon(self._fetch_needed, handle)
        self._sync_wakeup.set()

    async def _noop(self, msg: GossipMessage) -> None:
        return None

    def _stop_on(self, failure: StorageFailure) -> None:
        """Stop the node from a task it does not own.

        Gossip validators and handlers run in the p2p layer's tasks, which log and drop
        what they raise; raising the failure in the node's nursery stops the node as it
        would from its own loops.
        """
        async def fail() -> None:
            raise failure

        self._nursery.start_soon(fail)

    def _validator(self, handle: ChainHandle, fn: Callable[[ChainHandle, bytes], ValidationResult]) -> Callable[[str, bytes], ValidationResult]:
        def validate(peer: str, data: bytes) -> ValidationResult:
            try:
                return fn(handle, data)
            except StorageFailure as failure:  # our disk, not the peer: no verdict on the message
                self._stop_on(failure)
                return ValidationResult.IGNORE
            except DecodeError:
                return ValidationResult.REJECT
            except ChainError as exc:
                log.info("rejecting message from %s: %s", peer[:12], exc)
                return ValidationResult.REJECT
            except Exception:
                log.exception("validator crashed on a message from %s; ignoring it", peer[:12])
                return ValidationResult.IGNORE

        return validate

    # --- gossip validation (runs before anything is relayed) ---------------------------
    def _validate_problem(self, peer: str, data: bytes) -> ValidationResult:
        try:
            proposal = decode_proposal(data)
        except DecodeError:
            self.metrics.count("problem", "reject")
            return ValidationResult.REJECT
        if self._follows(proposal.chain_id):
            self.metrics.count("problem", "accept")
            return ValidationResult.ACCEPT
        return ValidationResult.IGNORE

    def _follows(self, chain_id: bytes) -> bool:
        follow = self.config.chain.follow
        return "*" in follow or chain_id.hex() in follow

    async def _on_problem_msg(self, msg: GossipMessage) -> None:
        await self.follow_proposal(decode_proposal(msg.data))

    async def follow_proposal(self, proposal: Proposal) -> None:
        """Follow a verified proposal's chain (from gossip or from a peer's problem list)."""
        try:
            handle, new = self.chains.add_proposal(proposal)
        except StorageFailure as failure:
            self._stop_on(failure)
            return
        if new:
            log.info("following new problem %s (%s)", proposal.params.name, handle.chain_id.hex()[:16])
            await self._join(handle, self._nursery)

    def _validate_block(self, handle: ChainHandle, data: bytes) -> ValidationResult:
        report = self.chains.import_block(handle, data)
        v = report.verdict
        self.metrics.count("block", v.value)
        if v is ImportVerdict.ACCEPTED:
            self._on_imported(handle, report)
            return ValidationResult.ACCEPT
        if v is ImportVerdict.EQUIVOCATION:
            # A committer's second block for a period: kept or refused by the store, never
            # relayed (as consensus-specs IGNOREs it), and its evidence goes on chain.
            if report.result is not None and report.result.status in ("head", "reorg"):
                self._on_imported(handle, report)
            self._report_equivocation(handle, report)
            return ValidationResult.IGNORE
        if v is ImportVerdict.KNOWN:
            return ValidationResult.IGNORE
        if v is ImportVerdict.INVALID:
            log.info("invalid block on %s: %s", handle.chain_id.hex()[:12], report.error)
            return ValidationResult.REJECT
        if v is ImportVerdict.NEEDS_PARENT:
            self._sync_wakeup.set()
        elif v is ImportVerdict.NEEDS_CONTENT and report.missing is not None:
            self._nursery.start_soon(self._fetch_one, report.missing, 1 << 30)
        return ValidationResult.DEFER

    def _report_equivocation(self, handle: ChainHandle, report: Any) -> None:
        """Submit both signed headers in a ``ReportEquivocation`` from this node's key, once per committer."""
        if report.evidence is None:
            return
        first, second = report.evidence
        log.warning("committer %s signed two blocks for period %d; reporting it",
                    first.committer.hex()[:12], first.period)
        if first.committer in handle.reported or is_ejected(handle.state, first.committer):
            return
        handle.reported.add(first.committer)
        tx = next_tx(self, handle, ReportEquivocation(first, second))
        nursery = getattr(self, "_nursery", None)
        if nursery is not None:
            nursery.start_soon(self.submit_tx, handle, tx)

    # Each validator decodes first: bytes that do not decode are REJECTed (and cost the
    # forwarder) even before the chain has started; only a well-formed message waits.
    def _validate_tx(self, handle: ChainHandle, data: bytes) -> ValidationResult:
        tx = Transaction.decode(data)
        if not handle.started:
            return ValidationResult.DEFER
        verdict = handle.mempool.add_tx(tx, handle.state)
        self.metrics.count("tx", verdict.value)
        if verdict is Verdict.ACCEPT:
            self._emit_tx(handle, tx)
        return _VERDICT[verdict]

    def _emit_tx(self, handle: ChainHandle, tx: Transaction) -> None:
        self.emit("txs", handle.chain_id, {"hash": "0x" + tx.hash.hex(), "sender": "0x" + tx.sender.hex(),
                                           "nonce": tx.nonce})

    def _accept_proof(self, handle: ChainHandle, msg: PoI | Reveal | SeasonReveal | TestTuple) -> Verdict:
        if isinstance(msg, TestTuple):  # during T_p only; its content is fetched for the Problem block
            verdict = handle.mempool.add_test_tuple(msg, handle.proposal, started=handle.started, now=self.now(),
                                                    env=handle.env)
            self._fetch_new_content(handle)
        elif isinstance(msg, PoI):
            verdict = handle.mempool.add_poi(msg, handle.state, self.now())
            if verdict is Verdict.ACCEPT:
                self.emit("proofs", handle.chain_id, {"poi": msg.hash.hex(), "period": msg.period,
                                                      "prover": msg.prover.hex(), "digest": msg.model_digest.hex()})
        elif isinstance(msg, Reveal):
            verdict = handle.mempool.add_reveal(msg, handle.state, self.now())
        else:
            verdict = handle.mempool.add_season_reveal(msg, handle.state)
        self.metrics.count("proof", verdict.value)
        return verdict

    def _validate_proof(self, handle: ChainHandle, data: bytes) -> ValidationResult:
        msg = decode_proof_message(data)
        if not handle.started and not isinstance(msg, TestTuple):
            return ValidationResult.DEFER
        return _VERDICT[self._accept_proof(handle, msg)]

    def _validate_vote(self, handle: ChainHandle, data: bytes) -> ValidationResult:
        vote = Vote.decode(data)
        if not handle.started:
            return ValidationResult.DEFER
        verdict = handle.mempool.add_vote(vote, handle.state, self.now())
        self.metrics.count("vote", verdict.value)
        if verdict is Verdict.ACCEPT:
            self.emit("votes", handle.chain_id, {"poi": vote.poi_hash.hex(), "validator": vote.validator.hex()})
        return _VERDICT[verdict]

    def _on_imported(self, handle: ChainHandle, report: Any) -> None:
        tip = handle.store.tip()
        header = handle.store.get_block(tip.head)
        receipt = report.result.outcome.receipt if report.result is not None and report.result.outcome else None
        settlement = receipt.settlement if receipt is not None else None
        log.info("head %d %s (%s)%s", tip.height, tip.head.hex()[:12], report.result.status if report.result else "",
                 f" settlement {settlement.outcome} {settlement.reason} d={settlement.distances}" if settlement else "")
        self._fetch_new_content(handle)
        if header is not None:
            self.emit("newHeads", handle.chain_id, {"height": tip.height, "hash": tip.head.hex(),
                                                    "period": header.header.period, "weight": tip.weight})

    # --- loops -------------------------------------------------------------------------
    async def _tick_loop(self) -> None:
        last_rejudge = 0.0
        while True:
            for handle in list(self.chains.chains.values()):
                try:
                    with data_dir_writes():  # roles store models and holdouts as content
                        await self._step_roles(handle)
                except StorageFailure:
                    raise
                except Exception:  # a role's failure is logged; the node keeps running
                    log.exception("role step failed on %s", handle.chain_id.hex()[:12])
            if time.monotonic() - last_rejudge > REJUDGE_INTERVAL_S:
                last_rejudge = time.monotonic()
                await self.p2p.rejudge()
                for fn in self.periodic:
                    fn()
            await trio.sleep(TICK_S)

    async def _step_roles(self, handle: ChainHandle) -> None:
        if self.contributor is not None and time.monotonic() - self.contributor.last_publish > 5.0:
            if handle.proposal.creator == self.keys.public_key:
                self.contributor.last_publish = time.monotonic()
                await self._publish(PROBLEMS_TOPIC, handle.proposal.encode())
        if self.contributor is not None:
            await self.contributor.step(self, handle)
        if self.config.roles.committer.enabled:
            await step_committer(self, handle)
        if self.validator is not None:
            await self.validator.step(self, handle)
        if self.improver is not None:
            target = self.config.roles.improver.chain
            if not target or target == handle.chain_id.hex():
                await self.improver.step(self, handle)
        if self.cheater is not None:
            target = self.config.roles.cheater.chain
            if not target or target == handle.chain_id.hex():
                await self.cheater.step(self, handle)
        if self.runner is not None:
            await self.runner.step(self, handle)

    async def _fetch_needed(self, handle: ChainHandle) -> None:
        for cid in self.chains.needed_content(handle):
            await self._fetch_one(cid, 1 << 30)
        self.chains.pin_needed(handle)

    def _fetch_new_content(self, handle: ChainHandle) -> None:
        """Content a block made necessary (a new season's Z_h): fetch it in the background."""
        nursery = getattr(self, "_nursery", None)
        if nursery is None:
            return
        for cid in self.chains.needed_content(handle):
            if cid not in self._fetching and not self.content.has(cid):
                self._fetching.add(cid)

                async def fetch(cid: bytes = cid) -> None:
                    try:
                        await self._fetch_one(cid, 1 << 30)
                        self.chains.pin_needed(handle)
                    finally:
                        self._fetching.discard(cid)

                nursery.start_soon(fetch)

    async def _fetch_one(self, cid: bytes, max_bytes: int) -> None:
        for attempt in range(30):
            if self.content.has(cid):
                return
            try:
                with trio.fail_after(60), data_dir_writes():
                    await self.p2p.fetch_content(cid, max_bytes)
                await self.p2p.rejudge()
                return
            except (P2PError, trio.TooSlowError) as exc:
                log.debug("content %s not fetched yet (%s)", cid.hex()[:12], exc)
                await trio.sleep(min(10.0, 0.5 * (attempt + 1)))
