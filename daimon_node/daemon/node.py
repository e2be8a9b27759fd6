"""The daemon: one trio nursery running the network, the chains, the components and the RPC.

``Node`` only assembles (trinity-style: ``__init__`` builds, ``run`` starts): the libp2p node;
one admission path for pooled messages and one block importer, which the gossip validators of
every followed chain call; the sync loop and the content fetcher; the enabled components
(roles, the runner, whatever the config adds), stepped each tick against the injectable clock
through a narrow ``RoleContext``; and the JSON-RPC server over a ``NodeAPI``.
Bad input from a peer is rejected, counted and never crashes the node. A write the data
directory refuses does stop it: ``StorageFailure`` (``DiskFull``) leaves ``run`` from
whichever task met it, and the CLI prints it as one line.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, Final

import trio

from chain import constants as C
from chain.crypto import KeyPair
from chain.errors import ChainError, CommitterEquivocation, DecodeError, MissingContent, UnknownParent
from chain.state import is_ejected
from chain.header import BlockHeader
from chain.payloads import ReportEquivocation
from chain.types import Proposal, TestTuple
from p2p import (PROBLEMS_TOPIC, ContentStore, DiscoveryConfig, GossipMessage, P2PConfig, P2PError, P2PNode,
                 ValidationResult, chain_topic)

from daimon_node.clock import Clock, SystemClock
from daimon_node.config import NodeConfig
from daimon_node.daemon.admission import PROOF, TX, VOTE, Admitter, MessageKind, NodeMetrics, Source
from daimon_node.daemon.chains import ChainHandle, ChainManager, ImportReport, ImportVerdict, data_dir_writes, decode_proposal
from daimon_node.daemon.components import Component, build_components
from daimon_node.daemon.context import RequestHandler, RoleContext
from daimon_node.daemon.importer import BlockImporter
from daimon_node.daemon.nodeapi import EventBus, NodeServices
from daimon_node.daemon.problems import ProblemDirectory
from daimon_node.daemon.roles import next_tx
from daimon_node.daemon.syncing import ChainSync, ContentFetcher
from daimon_node.errors import DaimonError, StorageFailure
from daimon_node.keystore import load_key
from daimon_node.proofs.sandbox import Sandbox
from daimon_node.rpc import render

log = logging.getLogger(__name__)

TICK_S = 0.25
REJUDGE_INTERVAL_S = 1.0


class NodeStartError(DaimonError):
    """The node cannot start: a port is taken, the data directory is unusable..."""


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
POOLED_TOPICS: Final[tuple[MessageKind, ...]] = (TX, PROOF, VOTE)


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
        self.p2p = self._build_p2p()
        self.sandbox = Sandbox()
        self.metrics = NodeMetrics()
        self.events = EventBus()
        self.admitter = Admitter(self.clock.now, self.events.emit, self._publish, self.metrics, self._admitted)
        self.importer = BlockImporter(self.chains, self.metrics, self._react_to_import, self._on_header_held)
        self.fetcher = ContentFetcher(self.content, self.p2p, self.chains)
        self.sync = ChainSync(self.chains, self.p2p, self.importer, self.fetcher, self._on_imported,
                              self._report_equivocation)
        self.periodic: list[Callable[[], None]] = []  # called about once a second (metrics)
        self.local_calls: dict[str, RequestHandler] = {}
        self.services = NodeServices(self.chains, self.content, self.problems, self.p2p, self.admitter, self.metrics,
                                     self.events, self.periodic, self.sync.targets, self.local_calls)
        self.context = self._build_context()
        self._joined: set[bytes] = set()
        self.rpc_port: int | None = None
        self.components: list[Component] = build_components(config, self.context)

    def _build_p2p(self) -> P2PNode:
        config = self.config
        return P2PNode(
            P2PConfig(seed=self.keys.seed, content_dir=self.data_dir / "content",
                      listen_addr=config.p2p.listen, bootstrap=tuple(config.p2p.bootstrap),
                      sync_max_item_bytes=C.MAX_BLOCK_MESSAGE_BYTES,
                      announce=tuple(config.p2p.announce),
                      discovery=DiscoveryConfig(dht=config.p2p.dht, mdns=config.p2p.mdns,
                                                target_peers=config.p2p.target_peers),
                      problems_max_proposal_bytes=C.MAX_PROBLEM_MESSAGE_BYTES),
            sync_provider=self.chains, store=self.content, problem_provider=self.problems)

    def _build_context(self) -> RoleContext:
        return RoleContext(keys=self.keys, content=self.content, sandbox=self.sandbox, clock=self.clock,
                           data_dir=self.data_dir, chains=self.chains, admitter=self.admitter,
                           peer_id=lambda: self.p2p.peer_id, import_and_publish=self._import_and_publish,
                           publish_raw=self._publish, fetch=self.fetcher.fetch, serve=self._serve)

    def _serve(self, protocol: str, codec: Any, limits: Any, handler: RequestHandler) -> None:
        self.p2p.request_response(protocol, codec, limits).serve(handler)
        self.local_calls[protocol] = handler

    def now(self) -> float:
        return self.clock.now()

    def _admitted(self, handle: ChainHandle, message: Any) -> None:
        if isinstance(message, TestTuple):  # its inputs and DEL go into the Problem block: fetch them now
            self.fetcher.fetch_new_content(handle)

    async def _import_and_publish(self, handle: ChainHandle, block_bytes: bytes) -> None:
        """Our own sealed block: imported like any other, published only if it became ours."""
        report = await self.importer.import_now(handle, block_bytes)
        if report.verdict is ImportVerdict.ACCEPTED:
            log.info("sealed block %d of %s", handle.store.height, handle.chain_id.hex()[:12])
            self._on_imported(handle, report)
            await self._publish(chain_topic(handle.chain_id, "blocks"), block_bytes)
        elif report.verdict is not ImportVerdict.KNOWN:
            log.error("own block not importable: %s %s", report.verdict, report.error)

    async def _publish(self, topic: str, data: bytes) -> None:
        try:
            await self.p2p.publish(topic, data)
        except P2PError as exc:
            log.warning("publish on %s failed: %s", topic, exc)

    # --- running ---------------------------------------------------------------------
    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = self.fetcher.nursery = nursery
                await self._start_network(nursery)
                if self.config.rpc.enabled:
                    from daimon_node.daemon.backend import start_rpc

                    self.rpc_port = await start_rpc(self.services, nursery, self.config.rpc.host,
                                                    self.config.rpc.port)
                    with data_dir_writes():
                        (self.data_dir / "rpc.port").write_text(str(self.rpc_port))
                with data_dir_writes():
                    (self.data_dir / "p2p.addrs").write_text("\n".join(self.p2p.listen_addrs()) + "\n")
                for component in self.components:
                    run = getattr(component, "run", None)
                    if run is not None:
                        nursery.start_soon(run, self.context)
                nursery.start_soon(self._tick_loop)
                nursery.start_soon(self.sync.run)
                nursery.start_soon(self.problems.run, self.p2p, self.follow_proposal)
                log.info("node %s up: p2p %s (announced %s) rpc %s", self.keys.address[:12], self.p2p.listen_addrs(),
                         self.p2p.announced_addrs(), self.rpc_port)
                task_status.started()
        finally:
            self.sandbox.close()
            for component in self.components:
                component.close()
            self.chains.close()

    async def _start_network(self, nursery: trio.Nursery) -> None:
        await nursery.start(self.p2p.run)
        if not self.p2p.listen_addrs():
            raise NodeStartError(f"p2p cannot listen on {self.config.p2p.listen} (address in use?)")
        await nursery.start(self.importer.run)
        await self.p2p.subscribe(PROBLEMS_TOPIC, self._on_problem_msg, self._validate_problem,
                                 max_size=TOPIC_CAPS["problems"])
        for handle in list(self.chains.chains.values()):
            await self._join(handle, nursery)

    async def _join(self, handle: ChainHandle, nursery: trio.Nursery) -> None:
        """Subscribe to a chain's topics and fetch what it needs."""
        if handle.chain_id in self._joined:
            return
        self._joined.add(handle.chain_id)
        cid = handle.chain_id
        await self.p2p.subscribe(chain_topic(cid, "blocks"), self._noop, self._validator(handle, self.importer.check),
                                 max_size=TOPIC_CAPS["blocks"])
        for kind in POOLED_TOPICS:
            await self.p2p.subscribe(chain_topic(cid, kind.topic), self._noop,
                                     self._validator(handle, self._admit_as(kind)), max_size=TOPIC_CAPS[kind.topic])
        nursery.start_soon(self.fetcher.fetch_needed, handle)
        self.sync.wake()

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

    def _admit_as(self, kind: MessageKind) -> Callable[[ChainHandle, bytes], ValidationResult]:
        """A gossip validator for ``kind``: the admission path's verdict, nothing else."""
        def validate(handle: ChainHandle, data: bytes) -> ValidationResult:
            return self.admitter.admit(handle, kind, data, Source.GOSSIP).verdict

        return validate

    # --- problems ----------------------------------------------------------------------
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

    # --- blocks ------------------------------------------------------------------------
    async def _react_to_import(self, handle: ChainHandle, report: ImportReport, data: bytes) -> None:
        """What a gossiped block's import asks of the node: events, sync, content, evidence."""
        v = report.verdict
        if v is ImportVerdict.ACCEPTED:
            self._on_imported(handle, report)
        elif v is ImportVerdict.EQUIVOCATION:
            # A committer's second block for a period: kept or refused by the store, never
            # relayed, and its evidence goes on chain.
            if report.result is not None and report.result.status in ("head", "reorg"):
                self._on_imported(handle, report)
            self._report_equivocation(handle, report.evidence)
        elif v is ImportVerdict.INVALID:
            log.info("invalid block on %s: %s", handle.chain_id.hex()[:12], report.error)
        elif v is ImportVerdict.NEEDS_PARENT:
            self.sync.wake()
        elif v is ImportVerdict.NEEDS_CONTENT and report.missing is not None:
            self._nursery.start_soon(self._import_after_fetch, handle, data, report.missing)

    async def _import_after_fetch(self, handle: ChainHandle, data: bytes, missing: bytes) -> None:
        await self.fetcher.fetch_one(missing)
        if self.content.has(missing):
            await self._react_to_import(handle, await self.importer.import_now(handle, data), data)

    def _on_header_held(self, handle: ChainHandle, exc: ChainError) -> None:
        """A header gossip holds back: sync its parent, fetch its content, report its equivocation."""
        if isinstance(exc, UnknownParent):
            self.sync.wake()
        elif isinstance(exc, MissingContent):
            self._nursery.start_soon(self.fetcher.fetch_one, exc.content_id)
        elif isinstance(exc, CommitterEquivocation):
            self._report_equivocation(handle, (exc.first, exc.second))

    def _report_equivocation(self, handle: ChainHandle,
                             evidence: tuple[BlockHeader, BlockHeader] | None) -> None:
        """Submit both signed headers in a ``ReportEquivocation`` from this node's key, once per committer."""
        if evidence is None:
            return
        first, second = evidence
        log.warning("committer %s signed two blocks for period %d; reporting it",
                    first.committer.hex()[:12], first.period)
        if first.committer in handle.reported or is_ejected(handle.state, first.committer):
            return
        handle.reported.add(first.committer)
        tx = next_tx(self.context, handle, ReportEquivocation(first, second))
        nursery = getattr(self, "_nursery", None)
        if nursery is not None:
            nursery.start_soon(self.context.submit_tx, handle, tx)

    def _on_imported(self, handle: ChainHandle, report: ImportReport) -> None:
        tip = handle.store.tip()
        header = handle.store.get_block(tip.head)
        receipt = report.result.outcome.receipt if report.result is not None and report.result.outcome else None
        settlement = receipt.settlement if receipt is not None else None
        log.info("head %d %s (%s)%s", tip.height, tip.head.hex()[:12], report.result.status if report.result else "",
                 f" settlement {settlement.outcome} {settlement.reason} d={settlement.distances}" if settlement else "")
        self.fetcher.fetch_new_content(handle)
        if header is not None:
            self.events.emit("newHeads", handle.chain_id, render.head_event(header.header, tip.weight))

    # --- the tick ----------------------------------------------------------------------
    async def _tick_loop(self) -> None:
        async with trio.open_nursery() as nursery:
            for component in self.components:
                nursery.start_soon(self._component_loop, component)
            last_rejudge = 0.0
            while True:
                if time.monotonic() - last_rejudge > REJUDGE_INTERVAL_S:
                    last_rejudge = time.monotonic()
                    await self.p2p.rejudge()
                    for fn in self.periodic:
                        fn()
                await trio.sleep(TICK_S)

    async def _component_loop(self, component: Component) -> None:
        """One component's steps, in a task of its own: a validator's VERIFY or an improver's PROVE
        (seconds under load) must not hold up the committer's seal or an improver's reveal, which
        have until the period's end (under load in one shared loop they missed it)."""
        while True:
            for handle in list(self.chains.chains.values()):
                await self._step_component(component, handle)
            await trio.sleep(TICK_S)

    async def _step_component(self, component: Component, handle: ChainHandle) -> None:
        """A component's failure is logged, the node runs on; a full disk stops the node."""
        try:
            with data_dir_writes():  # roles store models and holdouts as content
                await component.step(self.context, handle)
        except StorageFailure:
            raise
        except Exception:
            log.exception("%s step failed on %s", component.name, handle.chain_id.hex()[:12])
