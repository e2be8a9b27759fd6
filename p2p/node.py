"""``P2PNode``: the one object the node uses to reach the network.

It composes the host, gossip, sync and content services and runs them in one
trio nursery. Nothing outside ``p2p/`` needs to import libp2p.

Usage::

    node = P2PNode(P2PConfig(seed=key_seed, listen_addr="/ip4/0.0.0.0/tcp/4001",
                             bootstrap=[...], content_dir=data_dir / "content"),
                   sync_provider=my_chain_view)
    async with trio.open_nursery() as nursery:
        await nursery.start(node.run)          # returns once listening
        await node.subscribe(chain_topic(cid, "blocks"), on_block, validate_block)
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from p2p.abc import Handler, INetwork, PeerStats, ProblemListing, ProblemProvider, SyncHead, SyncProvider, Validator
from p2p.content import ContentService
from p2p.discovery import DiscoveryConfig, DiscoveryService
from p2p.errors import ContentNotFound, DialError, PeerBanned
from p2p.gossip import GossipService
from p2p.host import HostService
from p2p import libp2p_patches
from p2p.peers import WEIGHT_BAD_CONTENT, PeerBook
from p2p.reqresp import Codec, Req, ReqRespLimits, ReqRespService, Resp
from p2p.problems import MAX_LISTED, MAX_PROPOSAL_BYTES, ProblemsService
from p2p.serving import penalise
from p2p.store import ContentStore
from p2p.sync import SyncService

log = logging.getLogger(__name__)

MAX_PROVIDER_DIALS = 8  # holders of one content id dialled when no connected peer has it


@dataclass
class P2PConfig:
    """Network settings of one node (all durations in seconds, sizes in bytes)."""

    seed: bytes  # the node's persisted 32-byte Ed25519 seed
    content_dir: Path  # where the content store lives
    listen_addr: str = "/ip4/127.0.0.1/tcp/0"
    bootstrap: Sequence[str] = ()  # multiaddrs ending in /p2p/<peer id>; give 3+ (no hub)
    announce: Sequence[str] = ()  # addresses peers learn instead of listen_addr (NAT, port mapping, proxy)
    discovery: DiscoveryConfig = field(default_factory=DiscoveryConfig)  # DHT, mDNS, peers to keep
    topic_caps: dict[str, int] = field(default_factory=dict)  # overrides of topics.DEFAULT_TOPIC_CAPS
    content_max_total_bytes: int | None = None
    # misbehaviour
    ban_threshold: float = 5.0  # penalty units (one REJECT = 1) before a ban
    ban_s: float = 600.0
    penalty_half_life_s: float = 60.0
    # dialling
    dial_timeout_s: float = 10.0
    backoff_base_s: float = 1.0
    backoff_max_s: float = 60.0
    maintain_interval_s: float = 1.0
    # gossip
    validate_timeout_s: float = 5.0
    max_pending_per_topic: int = 256
    pending_ttl_s: float = 120.0
    heartbeat_interval_s: int = 1
    # GossipSub mesh degree (D, D_low, D_high); libp2p's usual (6, 4, 12). In a network
    # smaller than D every peer is in the mesh and each message arrives once per peer.
    gossip_degree: tuple[int, int, int] = (6, 4, 12)
    # streams
    request_timeout_s: float = 15.0
    sync_max_batch: int = 64
    sync_max_item_bytes: int = 2 * 1024 * 1024
    content_stall_timeout_s: float = 15.0
    problems_max_listed: int = MAX_LISTED
    problems_max_proposal_bytes: int = MAX_PROPOSAL_BYTES


class P2PNode(INetwork):
    """The network service of a DaiMoN node."""

    def __init__(self, config: P2PConfig, *, sync_provider: SyncProvider | None = None,
                 store: ContentStore | None = None, problem_provider: ProblemProvider | None = None) -> None:
        libp2p_patches.install()  # before the host and pubsub exist (checks the libp2p version)
        self.config = config
        self.book = PeerBook(
            ban_threshold=config.ban_threshold,
            ban_s=config.ban_s,
            penalty_half_life_s=config.penalty_half_life_s,
            backoff_base_s=config.backoff_base_s,
            backoff_max_s=config.backoff_max_s,
        )
        self.store = store or ContentStore(config.content_dir, config.content_max_total_bytes)
        self.hosting = HostService(
            config.seed, config.listen_addr, config.bootstrap, self.book, announce=config.announce,
            mdns=config.discovery.mdns, dial_timeout_s=config.dial_timeout_s, maintain_interval_s=config.maintain_interval_s,
        )
        host = self.hosting.host
        self.gossip = GossipService(
            host, self.book, topic_caps=config.topic_caps,
            validate_timeout_s=config.validate_timeout_s,
            max_pending_per_topic=config.max_pending_per_topic, pending_ttl_s=config.pending_ttl_s,
            heartbeat_interval_s=config.heartbeat_interval_s, degree=config.gossip_degree[0],
            degree_low=config.gossip_degree[1], degree_high=config.gossip_degree[2], on_ban=self._on_ban,
        )
        self.sync = SyncService(
            host, self.book, sync_provider, max_batch=config.sync_max_batch,
            max_item_bytes=config.sync_max_item_bytes, request_timeout_s=config.request_timeout_s,
            on_ban=self._on_ban,
        )
        self.problems = ProblemsService(
            host, self.book, problem_provider, max_listed=config.problems_max_listed,
            max_proposal_bytes=config.problems_max_proposal_bytes, request_timeout_s=config.request_timeout_s,
            on_ban=self._on_ban,
        )
        self.content = ContentService(
            host, self.book, self.store, open_timeout_s=config.request_timeout_s,
            stall_timeout_s=config.content_stall_timeout_s, on_ban=self._on_ban,
        )
        self.discovery = DiscoveryService(host, self.book, self.store, self.hosting.dial, config.discovery)
        self._reqresp: dict[str, ReqRespService[Any, Any]] = {}
        self._bans: trio.MemorySendChannel[str] | None = None
        self.bans_total = 0  # bans decided since start (threshold or operator), for metrics

    @property
    def peer_id(self) -> str:
        return self.hosting.peer_id

    # -- lifecycle ----------------------------------------------------------
    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen, join the mesh, keep peers connected; until cancelled."""
        ban_send, ban_recv = trio.open_memory_channel[str](256)
        self._bans = ban_send
        async with self.hosting.host.run(listen_addrs=[self.hosting.listen_maddr]):
            async with trio.open_nursery() as nursery:
                await nursery.start(self.gossip.run)
                nursery.start_soon(self.hosting.run_maintenance)
                await nursery.start(self.discovery.run)
                nursery.start_soon(self._enforce_bans, ban_recv)
                task_status.started()
                await trio.sleep_forever()

    def listen_addrs(self) -> list[str]:
        return self.hosting.listen_addrs()

    def announced_addrs(self) -> list[str]:
        return self.hosting.announced_addrs()

    async def connect(self, addr: str) -> str:
        """Dial one peer now (besides the bootstrap list); returns its peer id."""
        return await self.hosting.dial(addr)

    # -- gossip -------------------------------------------------------------
    async def subscribe(self, topic: str, handler: Handler, validator: Validator | None = None,
                        max_size: int | None = None) -> None:
        await self.gossip.subscribe(topic, handler, validator, max_size)

    async def publish(self, topic: str, data: bytes) -> bytes:
        return await self.gossip.publish(topic, data)

    async def rejudge(self, topic: str | None = None) -> int:
        return await self.gossip.rejudge(topic)

    def pending_count(self, topic: str) -> int:
        """How many deferred messages of ``topic`` wait for ``rejudge``."""
        return self.gossip.pending_count(topic)

    def mesh_peers(self, topic: str) -> list[str]:
        return self.gossip.mesh_peers(topic)

    def topic_peers(self, topic: str) -> list[str]:
        return self.gossip.topic_peers(topic)

    # -- sync ---------------------------------------------------------------
    async def request_head(self, peer: str, chain_id: bytes) -> SyncHead | None:
        return await self.sync.request_head(peer, chain_id)

    async def request_blocks(self, peer: str | None, chain_id: bytes, start: int, count: int) -> list[bytes]:
        return await self.sync.request_range(peer, "blocks", chain_id, start, count)

    async def request_headers(self, peer: str | None, chain_id: bytes, start: int, count: int) -> list[bytes]:
        return await self.sync.request_range(peer, "headers", chain_id, start, count)

    # -- problems -----------------------------------------------------------
    async def request_problem_list(self, peer: str) -> list[ProblemListing]:
        """The problems ``peer`` follows, with its head heights (``/daimon/problems/1``)."""
        return await self.problems.request_list(peer)

    async def request_proposal(self, peer: str, chain_id: bytes) -> bytes | None:
        """The proposal bytes ``peer`` serves for ``chain_id`` (unchecked: see ``penalise_bad_data``)."""
        return await self.problems.request_proposal(peer, chain_id)

    def penalise_bad_data(self, peer: str) -> None:
        """``peer`` served bytes that are not what their id says (a proposal whose hash is not
        the chain id asked for): the content-mismatch penalty, which bans at the default threshold."""
        penalise(self.book, peer, self._on_ban, WEIGHT_BAD_CONTENT)

    # -- content ------------------------------------------------------------
    async def fetch_content(self, content_id: bytes, max_bytes: int,
                            peers: Sequence[str] | None = None) -> Path:
        """Fetch from ``peers`` (default: the connected ones); if none of the connected peers has
        it, from the holders the DHT's provider records name, dialled first."""
        try:
            return await self.content.fetch(content_id, max_bytes, peers)
        except ContentNotFound:
            if peers is not None:
                raise
        holders = await self._dial_providers(content_id)
        if not holders:
            raise ContentNotFound(f"no connected peer has {content_id.hex()} and the DHT names no reachable holder")
        return await self.content.fetch(content_id, max_bytes, holders)

    async def _dial_providers(self, content_id: bytes) -> list[str]:
        """Dial up to ``MAX_PROVIDER_DIALS`` of the holders the DHT names, at once: a record's
        addresses are whatever its announcer wrote, so a dead one costs one dial timeout, not a
        timeout per record."""
        holders: list[str] = []

        async def dial(info: Any) -> None:
            try:
                holders.append(await self.hosting.dial(info))
            except (DialError, PeerBanned) as exc:
                log.info("content holder %s unreachable: %s", info.peer_id.to_base58(), exc)

        async with trio.open_nursery() as nursery:
            for info in (await self.discovery.find_providers(content_id))[:MAX_PROVIDER_DIALS]:
                nursery.start_soon(dial, info)
        return holders

    async def content_size_at(self, peer: str, content_id: bytes) -> int | None:
        """Ask one peer whether it has ``content_id`` (its size) or not (None)."""
        return await self.content.have(peer, content_id)

    # -- request/response protocols of the caller's own (e.g. /daimon/infer/1) --
    def request_response(self, protocol: str, codec: Codec[Req, Resp], limits: ReqRespLimits) -> ReqRespService[Req, Resp]:
        """The client (and, after its ``serve``, the server) of ``protocol``; one per protocol.

        Asking again for the same protocol returns the same service, so the runner's server
        and the node's client share its streams and counters.
        """
        service = self._reqresp.get(protocol)
        if service is None:
            service = ReqRespService(self.hosting.host, self.book, self._on_ban, protocol, codec, limits)
            self._reqresp[protocol] = service
        return service  # type: ignore[return-value]

    # -- peers ----------------------------------------------------------------
    def peers(self) -> list[PeerStats]:
        return self.book.stats()

    def peer_count(self) -> int:
        return len(self.hosting.connected_peers())

    def connected_peers(self) -> list[str]:
        return self.hosting.connected_peers()

    def ban(self, peer: str, seconds: float | None = None) -> None:
        """Ban a peer by hand (operator command): disconnect and refuse it for ``seconds``."""
        self.book.ban(peer, seconds)
        self._on_ban(peer)

    # -- internals ----------------------------------------------------------
    def _on_ban(self, peer: str) -> None:
        """Called synchronously wherever a ban is decided; the work happens in ``_enforce_bans``."""
        self.bans_total += 1
        self.gossip.blacklist(peer)
        self.hosting.forget_addrs(peer)
        if self._bans is not None:
            try:
                self._bans.send_nowait(peer)
            except trio.WouldBlock:
                log.warning("ban queue full; %s will be dropped on its next connect", peer)

    async def _enforce_bans(self, bans: trio.MemoryReceiveChannel[str]) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._lift_expired_bans)
            async for peer in bans:
                nursery.start_soon(self.hosting.disconnect, peer)

    async def _lift_expired_bans(self) -> None:
        while True:
            await trio.sleep(self.config.maintain_interval_s)
            self.gossip.unblacklist_expired()


__all__ = ["DialError", "P2PConfig", "P2PNode"]
