"""Peer and content discovery: libp2p's Kademlia DHT (and mDNS on a LAN).

With the DHT a node given one bootstrap address reaches a mesh, and a content id leads to
its holders even when none of them is connected. py-libp2p 0.8.1 ships the pieces but not
the glue: its ``KadDHT`` fills the routing table only through lookups (no connection
notifee), and nothing dials the peers that the table or mDNS learn. So this service

- refreshes the routing table soon after start, whenever it is smaller than the number of
  connections, and every ``refresh_interval_s``;
- dials table (and mDNS) peers, with the peer book's backoff, while the node holds fewer
  than ``target_peers`` connections, so a peer that drops is replaced;
- announces what the content store holds as provider records (``content_key``) and finds
  holders with ``find_providers``.

Random walk stays off: in a measured run it ended once in an exception group, and the
refresh above does its job. Every DHT call is bounded by ``lookup_timeout_s``.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import trio
from libp2p.abc import IHost
from libp2p.discovery.events.peerDiscovery import peerDiscovery
from libp2p.kad_dht import DHTMode, KadDHT
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo
from libp2p.tools.anyio_service import background_trio_service

from p2p.peers import PeerBook
from p2p.store import ContentStore

log = logging.getLogger(__name__)

DHT_PROTOCOL = "/ipfs/kad/1.0.0"
CONTENT_KEY_PREFIX = "/daimon/content/"  # not hex and not a CID, so libp2p keys it by its UTF-8 bytes
MAX_DISCOVERED = 256  # mDNS finds waiting to be dialled


def content_key(cid: bytes) -> str:
    """The DHT key under which holders of content ``cid`` announce themselves."""
    return CONTENT_KEY_PREFIX + cid.hex()


@dataclass(frozen=True)
class DiscoveryConfig:
    """How a node finds peers (durations in seconds)."""

    dht: bool = True
    mdns: bool = False  # multicast on every interface: a LAN's nodes find each other
    target_peers: int = 8  # dial discovered peers while fewer are connected
    first_refresh_s: float = 0.5  # the first routing-table refresh, once a peer is connected
    refresh_interval_s: float = 30.0
    provide_interval_s: float = 5.0  # how often the store is scanned for ids not yet announced
    provide_batch: int = 16  # announcements per scan (each is a lookup)
    lookup_timeout_s: float = 10.0
    max_parallel_dials: int = 4


@dataclass
class DiscoveryCounts:
    """What discovery did since start, for metrics and ``daimon_nodeInfo``."""

    refreshes: int = 0
    dials: int = 0
    dial_failures: int = 0
    provided: int = 0
    provider_lookups: int = 0
    dht_errors: int = 0
    mdns_found: int = 0


class _DropStreamEof(logging.Filter):
    """0.8.1 logs a WARNING with empty text each time a peer closes a DHT stream it finished
    with (``StreamEOF`` in the server's read loop): routine, so not worth an operator's eye."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.msg == "Failed to read DHT message from stream: %s"
                    and record.args and str(record.args[0]) == "")  # type: ignore[index]


logging.getLogger("libp2p.kad_dht.kad_dht").addFilter(_DropStreamEof())


class DiscoveryService:
    """Owns the node's DHT and its mDNS listener; feeds found peers to ``dial``."""

    def __init__(self, host: IHost, book: PeerBook, store: ContentStore,
                 dial: Callable[[PeerInfo], Awaitable[str]], config: DiscoveryConfig) -> None:
        self.host = host
        self.book = book
        self.store = store
        self.config = config
        self._dial = dial
        self.dht: KadDHT | None = KadDHT(host, DHTMode.SERVER, enable_random_walk=False) if config.dht else None
        self.counts = DiscoveryCounts()
        self._found: deque[PeerInfo] = deque(maxlen=MAX_DISCOVERED)  # appended from zeroconf's thread
        self._provided: set[bytes] = set()
        self._dialing: set[str] = set()
        self._self_id = host.get_id()
        if config.mdns:
            peerDiscovery.register_peer_discovered_handler(self._on_mdns_peer)

    # -- lifecycle ----------------------------------------------------------
    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Until cancelled: keep the routing table fresh, the node connected, the store announced."""
        try:
            async with trio.open_nursery() as nursery:
                if self.dht is not None:
                    await nursery.start(self._run_dht)
                nursery.start_soon(self._dial_loop)
                task_status.started()
        finally:
            if self.config.mdns:
                peerDiscovery.unregister_peer_discovered_handler(self._on_mdns_peer)

    async def _run_dht(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        assert self.dht is not None
        async with background_trio_service(self.dht):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._refresh_loop)
                nursery.start_soon(self._provide_loop)
                task_status.started()

    def routing_table_size(self) -> int:
        return self.dht.get_routing_table_size() if self.dht is not None else 0

    # -- routing table ------------------------------------------------------
    async def _refresh_loop(self) -> None:
        """Refresh once peers are connected, when the table lags the connections, and on a timer.

        A peer the table cannot take (its bucket is full) would lag for ever: the gap between
        refreshes for lag doubles each time, up to the timer's, and resets once nothing lags."""
        assert self.dht is not None
        last = float("-inf")
        lag_gap = 4 * self.config.first_refresh_s
        while True:
            connected = bool(self.host.get_connected_peers())
            now = trio.current_time()
            unrouted = self._unrouted()
            if not unrouted:
                lag_gap = 4 * self.config.first_refresh_s
            due = now - last >= self.config.refresh_interval_s
            lagging = unrouted > 0 and now - last >= lag_gap
            if connected and (due or lagging):
                if lagging:
                    lag_gap = min(2 * lag_gap, self.config.refresh_interval_s)
                last = now
                await self.refresh()
            await trio.sleep(self.config.first_refresh_s)

    def _unrouted(self) -> int:
        """Connected peers that serve the DHT (by identify) but are not in the table yet."""
        assert self.dht is not None
        routed = set(self.dht.routing_table.get_peer_ids())
        store = self.host.get_peerstore()
        count = 0
        for peer in self.host.get_connected_peers():
            if peer in routed:
                continue
            try:
                protocols = store.get_protocols(peer)
            except Exception:  # identify has not run yet
                continue
            count += DHT_PROTOCOL in (protocols or [])
        return count

    async def refresh(self) -> None:
        """One routing-table refresh (a lookup of our own id), bounded."""
        assert self.dht is not None
        self.counts.refreshes += 1
        with trio.move_on_after(self.config.lookup_timeout_s):
            try:
                await self.dht.refresh_routing_table()
            except Exception as exc:  # 0.8.1's lookups raise many unrelated types
                self.counts.dht_errors += 1
                log.debug("routing table refresh failed: %s", exc)

    # -- dialling -----------------------------------------------------------
    def _on_mdns_peer(self, info: PeerInfo) -> None:
        """Called on zeroconf's thread: only queue the peer (deque appends are thread-safe)."""
        if info.peer_id != self._self_id:
            self.counts.mdns_found += 1
            self._found.append(info)

    def _candidates(self) -> list[PeerInfo]:
        """Known peers worth a dial: table and mDNS peers, not connected, not banned, not backing off."""
        infos: list[PeerInfo] = []
        while self._found:
            infos.append(self._found.popleft())
        if self.dht is not None:
            store = self.host.get_peerstore()
            for pid in self.dht.routing_table.get_peer_ids():
                try:
                    addrs = store.addrs(pid)
                except Exception:  # PeerStoreError: no addresses known
                    continue
                if addrs:
                    infos.append(PeerInfo(pid, addrs))
        connected = {p.to_base58() for p in self.host.get_connected_peers()}
        out: list[PeerInfo] = []
        for info in infos:
            pid = info.peer_id.to_base58()
            if (info.peer_id == self._self_id or pid in connected or pid in self._dialing
                    or self.book.is_banned(pid) or not self.book.may_dial(_backoff_key(pid))):
                continue
            out.append(info)
        return out

    async def _dial_loop(self) -> None:
        async with trio.open_nursery() as nursery:
            while True:
                missing = self.config.target_peers - len(self.host.get_connected_peers())
                room = self.config.max_parallel_dials - len(self._dialing)
                for info in self._candidates()[: max(0, min(missing, room))]:
                    self._dialing.add(info.peer_id.to_base58())
                    nursery.start_soon(self._dial_one, info)
                await trio.sleep(self.config.first_refresh_s)

    async def _dial_one(self, info: PeerInfo) -> None:
        pid = info.peer_id.to_base58()
        self.counts.dials += 1
        try:
            await self._dial(info)
            self.book.dial_succeeded(_backoff_key(pid))
        except Exception as exc:  # DialError, PeerBanned
            self.counts.dial_failures += 1
            delay = self.book.dial_failed(_backoff_key(pid))
            log.debug("discovered peer %s unreachable (%s); retry in %.1f s", pid, exc, delay)
        finally:
            self._dialing.discard(pid)

    # -- provider records ---------------------------------------------------
    async def _provide_loop(self) -> None:
        while True:
            if self.host.get_connected_peers():
                await self.provide_new()
            await trio.sleep(self.config.provide_interval_s)

    async def provide_new(self) -> int:
        """Announce up to ``provide_batch`` stored ids not announced yet; returns how many."""
        fresh = [cid for cid in self.store.ids() if cid not in self._provided][: self.config.provide_batch]
        done = 0
        for cid in fresh:
            if await self.provide(cid):
                done += 1
        return done

    async def provide(self, cid: bytes) -> bool:
        """Announce that we hold ``cid``; False if no peer took the record (retried next scan)."""
        if self.dht is None:
            return False
        ok = False
        with trio.move_on_after(self.config.lookup_timeout_s):
            try:
                ok = await self.dht.provide(content_key(cid))
            except Exception as exc:
                self.counts.dht_errors += 1
                log.debug("provide %s failed: %s", cid.hex()[:12], exc)
        if ok:
            self._provided.add(cid)
            self.counts.provided += 1
        return ok

    async def find_providers(self, cid: bytes, count: int = 20) -> list[PeerInfo]:
        """Holders of ``cid`` by provider records: de-duplicated (0.8.1 repeats a provider once per
        peer that answered), without ourselves or banned peers; [] without a DHT or on timeout."""
        if self.dht is None:
            return []
        self.counts.provider_lookups += 1
        found: list[PeerInfo] = []
        with trio.move_on_after(self.config.lookup_timeout_s):
            try:
                found = await self.dht.find_providers(content_key(cid), count)
            except Exception as exc:
                self.counts.dht_errors += 1
                log.debug("find providers of %s failed: %s", cid.hex()[:12], exc)
        unique: dict[ID, PeerInfo] = {}
        for info in found:
            if info.peer_id != self._self_id and not self.book.is_banned(info.peer_id.to_base58()):
                unique.setdefault(info.peer_id, info)
        return list(unique.values())


def _backoff_key(pid: str) -> str:
    """Backoff entries of discovered peers, apart from bootstrap addresses in the same book."""
    return f"discovered:{pid}"
