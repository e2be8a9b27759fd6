"""Every change this project makes to py-libp2p 0.8.1 itself, installed by ``install()``.

Each patch replaces one upstream function or module-level name, keeps its contract, and
is written against 0.8.1's source: ``install()`` refuses any other version with
``UnsupportedLibp2p`` instead of silently patching code it was not written for. Nothing
here runs at import; ``P2PNode`` calls ``install()`` before it builds a host (it is
idempotent, so a second node in the same process changes nothing).

Why they exist: a gossip RPC of 1 KB cost ~1 ms of CPU per send or receive in 0.8.1,
most of it per-frame and per-read overhead rather than bytes (docs/p2p.md), and two
library defaults (a 32-slot outbound queue, a signed-record verify per RPC) cost
dropped messages and CPU. ``tests/p2p/test_p2p_patches.py`` checks each contract.

Our ``Pubsub`` subclass (``p2p/pubsub.py``) is not here: it changes only the instances
the gossip service builds, never libp2p for anyone else in the process.
"""

from __future__ import annotations

import functools
import importlib.metadata
import logging
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import multiaddr
import trio
import libp2p.pubsub.gossipsub as _libp2p_gossipsub
import libp2p.pubsub.pubsub as _libp2p_pubsub
from libp2p.abc import IHost
from libp2p.io.exceptions import ConnectionClosedError
from libp2p.io.trio import TrioTCPStream
from libp2p.io.utils import read_exactly
from libp2p.peer.id import ID
from libp2p.pubsub.pb import rpc_pb2
from libp2p.pubsub.rpc_queue import RpcQueue
from libp2p.stream_muxer.yamux.yamux import Yamux, YamuxStream

from p2p.errors import UnsupportedLibp2p

PINNED_LIBP2P = "0.8.1"

# Per-peer outbound pubsub RPC queue: 0.8.1's default of 32 silently drops bursts.
OUTBOUND_QUEUE_SIZE = 4096
# Room for the largest topic cap plus protobuf/signature overhead (gossip's frame limit).
MAX_RPC_BYTES = 2 * 1024 * 1024
TCP_READ_CHUNK = 64 * 1024
# Signed peer records remembered per peerstore, and for how long (see _consume_signed_record_once).
RECORD_CACHE_SIZE = 4096
RECORD_CACHE_TTL_S = 60.0


# -- transport: TCP reads ---------------------------------------------------------------
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


# -- transport: yamux ---------------------------------------------------------------------
async def _yamux_window_update_go(self: YamuxStream, *, bytes_read: int = 0) -> None:
    """Replaces ``YamuxStream._auto_tune_and_send_window_update`` (libp2p/stream_muxer/yamux/yamux.py).

    Upstream's "partial slack" branch sends a WINDOW_UPDATE after *every* read
    that leaves any credit outstanding, i.e. always: one extra yamux frame (a
    Noise message and a syscall at each end) per gossip RPC. This keeps only
    go-yamux's rule (``sendWindowUpdate``): grant credit once the
    consumed-but-unreturned bytes reach half the target window, with upstream's
    auto-tuning of that window. A sender therefore never waits while the reader
    keeps reading. Runs without ``window_lock``: the bookkeeping has no await, so
    in trio it is atomic.
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
    return await _yamux_read_data_body.daimon_upstream(self, length)  # type: ignore[attr-defined]


_yamux_log = logging.getLogger("libp2p.stream_muxer.yamux.yamux")


async def _yamux_write_frame(self: Yamux, data: bytes) -> None:
    """Replaces ``Yamux._write_frame`` (libp2p/stream_muxer/yamux/yamux.py).

    Upstream unpacks every outgoing header and formats a debug f-string for it
    whether or not debug logging is on. Same writes, same lock, same checkpoint;
    upstream's own code runs when that logger is at DEBUG.
    """
    if _yamux_log.isEnabledFor(logging.DEBUG):
        await _yamux_write_frame.daimon_upstream(self, data)  # type: ignore[attr-defined]
        return
    async with self._write_lock:
        await self.secured_conn.write(data)
    await trio.lowlevel.checkpoint()


# -- pubsub: signed peer records ----------------------------------------------------------
# peerstore -> {(peer id, record bytes): when consumed}; weak, so a closed host's entries
# go with it and a new host never inherits them.
_record_cache: "weakref.WeakKeyDictionary[object, OrderedDict[tuple[bytes, bytes], float]]" = (
    weakref.WeakKeyDictionary()
)


def _consume_signed_record_once(msg: rpc_pb2.RPC, host: IHost, peer_id: ID) -> bool:
    """Replaces ``maybe_consume_signed_record`` in libp2p/pubsub/{pubsub,gossipsub}.py.

    Every pubsub RPC carries the sender's signed peer record, and 0.8.1 verifies and
    stores it again for every RPC (~0.4 ms: an Ed25519 verify plus multiaddr parsing),
    though it is the same bytes each time. Remember the records each peerstore already
    took, for ``RECORD_CACHE_TTL_S``, and skip the repeat work; anything new goes
    through upstream's function.
    """
    if not msg.HasField("senderRecord"):
        return True
    peerstore = host.get_peerstore()
    cache = _record_cache.get(peerstore)
    if cache is None:
        cache = _record_cache[peerstore] = OrderedDict()
    key = (peer_id.to_bytes(), msg.senderRecord)
    now = time.monotonic()
    seen = cache.get(key)
    if seen is not None and now - seen < RECORD_CACHE_TTL_S:
        return True
    ok: bool = _consume_signed_record_once.daimon_upstream(msg, host, peer_id)  # type: ignore[attr-defined]
    if ok:
        cache[key] = now
        cache.move_to_end(key)
        while len(cache) > RECORD_CACHE_SIZE:
            cache.popitem(last=False)
    return ok


# -- per host -----------------------------------------------------------------------------
def cache_host_addrs(host: IHost, ttl_s: float = 1.0) -> None:
    """Memoise ``host.get_addrs()`` for ``ttl_s`` on one host (called by ``HostService``).

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


# -- installation -------------------------------------------------------------------------
# (owner, attribute, replacement): classes get a method, modules a function or factory.
PATCHES: tuple[tuple[Any, str, Any], ...] = (
    (TrioTCPStream, "read", _tcp_read_buffered),
    (YamuxStream, "_auto_tune_and_send_window_update", _yamux_window_update_go),
    (Yamux, "_read_data_body", _yamux_read_data_body),
    (Yamux, "_write_frame", _yamux_write_frame),
    (_libp2p_pubsub, "maybe_consume_signed_record", _consume_signed_record_once),
    (_libp2p_gossipsub, "maybe_consume_signed_record", _consume_signed_record_once),
)


def _upstream(owner: Any, name: str) -> Any:
    current = getattr(owner, name)
    return getattr(current, "daimon_upstream", current)  # a second install must not capture our own


def check_version(found: str | None = None) -> None:
    """Raise ``UnsupportedLibp2p`` unless the installed libp2p is the pinned version."""
    version = importlib.metadata.version("libp2p") if found is None else found
    if version != PINNED_LIBP2P:
        raise UnsupportedLibp2p(version, PINNED_LIBP2P)


def install() -> None:
    """Check the libp2p version, then install every patch (idempotent).

    Each replacement keeps the function it replaced as ``daimon_upstream``. The pubsub
    outbound queue is rebound to a ``functools.partial`` of ``RpcQueue`` with our sizes
    (0.8.1 has no constructor knob for them).
    """
    check_version()
    for owner, name, fn in PATCHES:
        fn.daimon_upstream = _upstream(owner, name)
        setattr(owner, name, fn)
    if not isinstance(_libp2p_pubsub.RpcQueue, functools.partial):
        _libp2p_pubsub.RpcQueue = functools.partial(  # type: ignore[misc]
            RpcQueue, max_size=OUTBOUND_QUEUE_SIZE, max_message_size=MAX_RPC_BYTES
        )


def installed() -> bool:
    """Whether ``install()`` has run in this process."""
    return all(getattr(owner, name) is fn for owner, name, fn in PATCHES)
