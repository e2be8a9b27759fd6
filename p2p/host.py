"""The libp2p host: identity, listening, bootstrap dialling with backoff, bans.

Wraps ``libp2p.new_host`` (TCP + Noise + Yamux, which interoperate with go/js
libp2p; ``upgrade_options`` narrows 0.8.1's defaults to exactly these) and keeps
the peer book in step with the connections the swarm reports.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import multiaddr
import trio
from libp2p import new_host
from libp2p.abc import IHost, INetConn, INetStream, INetwork, INotifee
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.crypto.keys import KeyPair
from libp2p.crypto.x25519 import create_new_key_pair as create_new_x25519_key_pair
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo, info_from_p2p_addr
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
from libp2p.security.noise.transport import Transport as NoiseTransport
from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX_PROTOCOL_ID
from libp2p.stream_muxer.yamux.yamux import Yamux

from p2p.errors import ConfigError, DialError, PeerBanned
from p2p.libp2p_patches import cache_host_addrs
from p2p.peers import PeerBook

log = logging.getLogger(__name__)

SEED_LEN = 32
BOOTSTRAP_ADDR_TTL_S = 120  # what host.connect gives the addresses it is handed


def key_pair_from_seed(seed: bytes) -> KeyPair:
    """The node's Ed25519 key pair from its persisted 32-byte seed."""
    if len(seed) != SEED_LEN:
        raise ConfigError(f"node key seed must be {SEED_LEN} bytes, got {len(seed)}")
    return create_new_key_pair(seed)


def upgrade_options(key_pair: KeyPair) -> dict[str, Any]:
    """``new_host`` options for Noise and Yamux only (docs/wire.md "Transport").

    0.8.1's defaults also accept ``/plaintext/2.0.0``, in which a peer names a key without
    proving it holds it (so anyone could connect as any peer id and have that peer penalised
    and banned), ``/secio/1.0.0``, TLS, and the ``/mplex/6.7.0`` muxer, which has no flow
    control and so escapes the yamux window that bounds a flooding connection's memory
    (docs/p2p.md, flood limits). Go and js libp2p speak Noise and Yamux too.
    """
    noise = NoiseTransport(key_pair, noise_privkey=create_new_x25519_key_pair().private_key)
    return {
        "sec_opt": {NOISE_PROTOCOL_ID: noise},
        "muxer_opt": {TProtocol(YAMUX_PROTOCOL_ID): Yamux},
    }


def peer_id_from_seed(seed: bytes) -> str:
    """The peer id (base58, ``12D3KooW...``) a seed gives, without starting a host."""
    return ID.from_pubkey(key_pair_from_seed(seed).public_key).to_base58()


def parse_listen_addr(addr: str) -> multiaddr.Multiaddr:
    """Parse a listen multiaddr such as ``/ip4/0.0.0.0/tcp/4001``."""
    try:
        maddr = multiaddr.Multiaddr(addr)
    except Exception as exc:  # multiaddr raises several unrelated types
        raise ConfigError(f"bad listen address {addr!r}: {exc}") from exc
    if "tcp" not in [p.name for p in maddr.protocols()]:
        raise ConfigError(f"listen address {addr!r} has no /tcp/ part")
    return maddr


def parse_peer_addr(addr: str) -> PeerInfo:
    """Parse a bootstrap multiaddr that ends in ``/p2p/<peer id>``."""
    try:
        return info_from_p2p_addr(multiaddr.Multiaddr(addr))
    except Exception as exc:
        raise ConfigError(f"bad peer address {addr!r} (needs /p2p/<id>): {exc}") from exc


class _ConnectionWatcher(INotifee):
    """Mirrors swarm connection events into the peer book; flags banned inbound peers."""

    def __init__(self, book: PeerBook, to_close: trio.MemorySendChannel[ID]) -> None:
        self._book = book
        self._to_close = to_close

    async def connected(self, network: INetwork, conn: INetConn) -> None:
        peer = conn.muxed_conn.peer_id
        pid = peer.to_base58()
        self._book.set_connected(pid, True)
        if self._book.is_banned(pid):
            try:  # closing inside the swarm's own callback would re-enter it
                self._to_close.send_nowait(peer)
            except (trio.WouldBlock, trio.ClosedResourceError):
                log.warning("ban queue full; %s stays until the next sweep", pid)

    async def disconnected(self, network: INetwork, conn: INetConn) -> None:
        peer = conn.muxed_conn.peer_id
        if not network.get_connections(peer):
            self._book.set_connected(peer.to_base58(), False)

    async def opened_stream(self, network: INetwork, stream: INetStream) -> None:
        await trio.lowlevel.checkpoint()

    async def closed_stream(self, network: INetwork, stream: INetStream) -> None:
        await trio.lowlevel.checkpoint()

    async def listen(self, network: INetwork, multiaddr: multiaddr.Multiaddr) -> None:
        await trio.lowlevel.checkpoint()

    async def listen_close(self, network: INetwork, multiaddr: multiaddr.Multiaddr) -> None:
        await trio.lowlevel.checkpoint()


class HostService:
    """Owns the libp2p host; keeps bootstrap peers connected and banned peers out."""

    def __init__(
        self,
        seed: bytes,
        listen_addr: str,
        bootstrap: Sequence[str],
        book: PeerBook,
        *,
        announce: Sequence[str] = (),
        mdns: bool = False,
        dial_timeout_s: float = 10.0,
        maintain_interval_s: float = 1.0,
    ) -> None:
        self.book = book
        self.listen_maddr = parse_listen_addr(listen_addr)
        self.bootstrap = [(a, parse_peer_addr(a)) for a in bootstrap]
        self.dial_timeout_s = dial_timeout_s
        self.maintain_interval_s = maintain_interval_s
        # Peers learn our addresses from identify and from the signed peer record in every
        # pubsub RPC, and libp2p dials every address it knows for a peer. ``announce``
        # replaces the listen address there (NAT, port mapping, a proxy in front).
        announced = [parse_listen_addr(a) for a in announce] or None
        key_pair = key_pair_from_seed(seed)
        self.host: IHost = new_host(key_pair=key_pair, announce_addrs=announced, enable_mDNS=mdns,
                                    **upgrade_options(key_pair))
        cache_host_addrs(self.host)
        self.peer_id = self.host.get_id().to_base58()
        self._to_close_send, self._to_close_recv = trio.open_memory_channel[ID](256)
        self.host.get_network().register_notifee(_ConnectionWatcher(book, self._to_close_send))
        self._dialing: set[str] = set()

    def listen_addrs(self) -> list[str]:
        """The addresses we are bound to, with ``/p2p/<id>`` (empty if listening failed)."""
        return [f"{a}/p2p/{self.peer_id}" for a in self.host.get_transport_addrs()]

    def announced_addrs(self) -> list[str]:
        """The addresses peers learn from us (``announce`` if configured, else where we listen)."""
        return [str(a) for a in self.host.get_addrs()]

    def connected_peers(self) -> list[str]:
        return [p.to_base58() for p in self.host.get_connected_peers()]

    async def dial(self, addr: str | PeerInfo) -> str:
        """Connect to a peer (no-op if connected); returns its id. Bounded by ``dial_timeout_s``."""
        info = parse_peer_addr(addr) if isinstance(addr, str) else addr
        pid = info.peer_id.to_base58()
        if self.book.is_banned(pid):
            raise PeerBanned(pid, self.book.banned_for(pid))
        if pid == self.peer_id:
            raise DialError("refusing to dial ourselves")
        try:
            with trio.fail_after(self.dial_timeout_s):
                await self.host.connect(info)
        except trio.TooSlowError as exc:
            raise DialError(f"dial {pid} timed out after {self.dial_timeout_s} s") from exc
        except Exception as exc:  # swarm raises SwarmException, OpenConnectionError, OSError...
            raise DialError(f"dial {pid} failed: {exc}") from exc
        for a in info.addrs:
            self.book.seen(pid, str(a))
        return pid

    def forget_addrs(self, peer: str) -> None:
        """Drop a peer's addresses from the peerstore.

        libp2p's swarm runs an ``AutoConnector`` that re-dials any peerstore entry
        with addresses (after a 60 s back-off); clearing them keeps a banned peer
        from being re-dialled behind our back.
        """
        try:
            self.host.get_peerstore().clear_addrs(ID.from_base58(peer))
        except Exception as exc:
            log.debug("clear addrs of %s: %s", peer, exc)

    async def disconnect(self, peer: str) -> None:
        """Close every connection to ``peer`` (best effort, bounded)."""
        with trio.move_on_after(self.dial_timeout_s):
            try:
                await self.host.disconnect(ID.from_base58(peer))
            except Exception as exc:
                log.debug("disconnect %s: %s", peer, exc)
        self.book.set_connected(peer, False)

    async def run_maintenance(self) -> None:
        """Forever: close banned peers' connections, re-dial bootstrap peers with backoff."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._close_banned)
            while True:
                for addr, info in self.bootstrap:
                    pid = info.peer_id.to_base58()
                    if (
                        pid in self._dialing
                        or self.book.is_connected(pid)
                        or self.book.is_banned(pid)
                        or not self.book.may_dial(addr)
                    ):
                        continue
                    self._dialing.add(pid)
                    nursery.start_soon(self._dial_bootstrap, addr, info)
                await trio.sleep(self.maintain_interval_s)

    async def _dial_bootstrap(self, addr: str, info: PeerInfo) -> None:
        pid = info.peer_id.to_base58()
        # The swarm refuses to dial a peer for 60 s after all its addresses failed
        # (its "negative cache"); our backoff owns the retry schedule instead.
        unblock = getattr(self.host.get_network(), "unblock_peer", None)
        if unblock is not None:
            unblock(info.peer_id)
        self._prefer_configured_addrs(info)
        try:
            await self.dial(info)
            self.book.dial_succeeded(addr)
        except (DialError, PeerBanned) as exc:
            delay = self.book.dial_failed(addr)
            log.info("bootstrap %s unreachable (%s); retry in %.1f s", pid, exc, delay)
        finally:
            self._dialing.discard(pid)

    def _prefer_configured_addrs(self, info: PeerInfo) -> None:
        """Make the bootstrap address the one the swarm dials.

        The swarm dials at most one address per transport (TCP here): the first the
        peerstore holds. Once connected, the peer's signed peer record (identify, every
        pubsub RPC) replaces what the peerstore held with the addresses the peer announces
        itself, so without this a re-dial after a disconnect would only ever try those,
        never the operator's: a peer announcing an address we cannot reach (NAT, a
        wildcard listen address, a proxy in between) would never be reached again.
        """
        store = self.host.get_peerstore()
        store.clear_addrs(info.peer_id)
        store.add_addrs(info.peer_id, info.addrs, BOOTSTRAP_ADDR_TTL_S)

    async def _close_banned(self) -> None:
        async for peer in self._to_close_recv:
            await self.disconnect(peer.to_base58())
