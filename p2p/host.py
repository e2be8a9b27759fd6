"""The libp2p host: identity, listening, bootstrap dialling with backoff, bans.

Wraps ``libp2p.new_host`` (TCP + Noise + Yamux, which interoperate with go/js
libp2p; ``upgrade_options`` narrows 0.8.1's defaults to exactly these) and keeps
the peer book in step with the connections the swarm reports.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import multiaddr
import trio
from libp2p import new_host
from libp2p.abc import IHost, INetConn, INetStream, INetwork, INotifee
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.crypto.keys import KeyPair
from libp2p.crypto.x25519 import create_new_key_pair as create_new_x25519_key_pair
from libp2p.custom_types import TProtocol
from libp2p.io.exceptions import ConnectionClosedError
from libp2p.io.trio import TrioTCPStream
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo, info_from_p2p_addr
from libp2p.io.utils import read_exactly
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
from libp2p.security.noise.transport import Transport as NoiseTransport
from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX_PROTOCOL_ID
from libp2p.stream_muxer.yamux.yamux import Yamux, YamuxStream

from p2p.errors import ConfigError, DialError, PeerBanned
from p2p.peers import PeerBook

log = logging.getLogger(__name__)

SEED_LEN = 32
BOOTSTRAP_ADDR_TTL_S = 120  # what host.connect gives the addresses it is handed


# -- narrowly scoped patches of libp2p 0.8.1 transport code (process-wide) ------
# Each replaces one upstream function, keeps its contract, and is applied once at
# import of this module (tests/p2p/test_p2p_patches.py checks them). They exist
# because a gossip RPC of 1 KB costs ~1 ms of CPU per send or receive in 0.8.1,
# most of it per-frame and per-read overhead rather than bytes (docs/p2p.md).

TCP_READ_CHUNK = 64 * 1024


async def _tcp_read_buffered(self: TrioTCPStream, n: int | None = None) -> bytes:
    """Replaces ``TrioTCPStream.read`` (libp2p/io/trio.py).

    Upstream asks the socket for exactly what the caller wants, and Noise reads
    each frame as a 2-byte length then the body: two ``recv`` calls (two trio
    checkpoints, two lock round trips) per frame. This version receives up to
    64 KiB and serves later reads from what is left. Contract unchanged: returns
    at most ``n`` bytes (any amount for ``None``), ``b""`` at EOF or after a
    local close, ``ConnectionClosedError`` on a reset.
    """
    if n == 0:
        return b""
    async with self.read_lock:
        buf: bytes = getattr(self, "_daimon_rbuf", b"")
        if not buf:
            try:
                buf = await self.stream.receive_some(max(n or 0, TCP_READ_CHUNK))
            except trio.BrokenResourceError as error:
                raise ConnectionClosedError(
                    f"TCP connection reset by remote peer: {error}", transport="tcp"
                ) from error
            except trio.ClosedResourceError:
                return b""
        if n is None or n >= len(buf):
            self._daimon_rbuf = b""  # type: ignore[attr-defined]
            return buf
        self._daimon_rbuf = buf[n:]  # type: ignore[attr-defined]
        return buf[:n]


async def _yamux_window_update_go(self: YamuxStream, *, bytes_read: int = 0) -> None:
    """Replaces ``YamuxStream._auto_tune_and_send_window_update`` (libp2p/stream_muxer/yamux/yamux.py).

    Upstream's "partial slack" branch sends a WINDOW_UPDATE after *every* read
    that leaves any credit outstanding, i.e. always, whatever
    PY_YAMUX_RELEASE_ON_READ says: one extra yamux frame (a Noise message and a
    syscall at each end) per gossip RPC. This keeps only go-yamux's rule
    (``sendWindowUpdate``): grant credit once the consumed-but-unreturned bytes
    reach half the target window, with upstream's auto-tuning of that window.
    A sender therefore never waits while the reader keeps reading. Runs without
    ``window_lock``: the bookkeeping has no await, so in trio it is atomic.
    """
    buffered = len(self.conn.stream_buffers.get(self.stream_id, b""))
    delta = self.target_recv_window - (self.recv_window + buffered)
    if delta <= 0 or delta < self.target_recv_window // 2:
        return
    total = self._grow_to_delta(buffered) + self._apply_autotune_epoch(buffered)
    self._pending_recv_release = 0
    if total > 0:
        await self.send_window_update(total, skip_lock=True)


async def _yamux_read_data_body(self: Yamux, length: int) -> bytes:
    """Replaces ``Yamux._read_data_body`` (libp2p/stream_muxer/yamux/yamux.py).

    Upstream arms a ``trio.fail_after`` (and reads PY_YAMUX_DATA_READ_TIMEOUT from
    the environment) for every DATA frame body. py-libp2p writes a frame's header
    and body as one Noise message, so once the header is read the body is almost
    always already decrypted in the ``SecureSession`` buffer: take it from there
    without a deadline (nothing can block). Otherwise, upstream's path.
    """
    conn = self.secured_conn
    high = getattr(conn, "high_watermark", None)
    low = getattr(conn, "low_watermark", None)
    if isinstance(high, int) and isinstance(low, int) and high - low >= length:
        return await read_exactly(conn, length)
    return await _UPSTREAM_YAMUX_READ_DATA_BODY(self, length)


_yamux_log = logging.getLogger("libp2p.stream_muxer.yamux.yamux")


async def _yamux_write_frame(self: Yamux, data: bytes) -> None:
    """Replaces ``Yamux._write_frame`` (libp2p/stream_muxer/yamux/yamux.py).

    Upstream unpacks every outgoing header and formats a debug f-string for it
    whether or not debug logging is on. Same writes, same lock, same checkpoint;
    upstream's own code runs when that logger is at DEBUG.
    """
    if _yamux_log.isEnabledFor(logging.DEBUG):
        await _UPSTREAM_YAMUX_WRITE_FRAME(self, data)
        return
    async with self._write_lock:
        await self.secured_conn.write(data)
    await trio.lowlevel.checkpoint()


_PATCHES = (
    (TrioTCPStream, "read", _tcp_read_buffered),
    (YamuxStream, "_auto_tune_and_send_window_update", _yamux_window_update_go),
    (Yamux, "_read_data_body", _yamux_read_data_body),
    (Yamux, "_write_frame", _yamux_write_frame),
)


def _upstream(cls: type, name: str) -> Callable[..., Any]:
    fn = getattr(cls, name)
    return getattr(fn, "daimon_upstream", fn)  # a reload must not capture our own version


_UPSTREAM_YAMUX_READ_DATA_BODY = _upstream(Yamux, "_read_data_body")
_UPSTREAM_YAMUX_WRITE_FRAME = _upstream(Yamux, "_write_frame")


def apply_transport_patches() -> None:
    """Install the replacements above (idempotent); each keeps its upstream as ``daimon_upstream``."""
    for cls, name, fn in _PATCHES:
        fn.daimon_upstream = _upstream(cls, name)  # type: ignore[attr-defined]
        setattr(cls, name, fn)


apply_transport_patches()


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


def _cache_addrs(host: IHost, ttl_s: float = 1.0) -> None:
    """Memoise ``host.get_addrs()`` for ``ttl_s``.

    libp2p 0.8.1 calls ``get_addrs()`` for every outgoing pubsub RPC (to attach
    the signed peer record, ``env_to_send_in_RPC``), and each call rebuilds the
    multiaddrs from strings: ~1.6 ms, measured as a seventh of the CPU of a
    gossip publish. Listen addresses change rarely, so a short cache is safe.
    """
    original: Callable[[], list[multiaddr.Multiaddr]] = host.get_addrs
    cached: list[multiaddr.Multiaddr] = []
    stamp = [-float("inf")]

    def get_addrs() -> list[multiaddr.Multiaddr]:
        now = time.monotonic()
        if now - stamp[0] > ttl_s or not cached:
            cached[:] = original()
            stamp[0] = now
        return list(cached)

    host.get_addrs = get_addrs  # type: ignore[method-assign]


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
        self.host: IHost = new_host(key_pair=key_pair, announce_addrs=announced, **upgrade_options(key_pair))
        _cache_addrs(self.host)
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
