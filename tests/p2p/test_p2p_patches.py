"""The libp2p 0.8.1 replacements in p2p/libp2p_patches.py keep upstream's contracts."""

from __future__ import annotations

import functools

import pytest
import trio
from libp2p.exceptions import ParseError
from libp2p.io.exceptions import IncompleteReadError, MessageTooLarge
from libp2p.io.trio import TrioTCPStream
from libp2p.stream_muxer.yamux.yamux import DEFAULT_WINDOW_SIZE, Yamux, YamuxStream
from libp2p.utils.varint import encode_uvarint

import libp2p.pubsub.pubsub as libp2p_pubsub

from p2p import libp2p_patches
from p2p.errors import UnsupportedLibp2p
from p2p.pubsub import DaimonPubsub, RpcReader as _RpcReader

libp2p_patches.install()  # what P2PNode does; the tests below exercise the patched classes directly


def test_patches_installed_and_upstream_kept() -> None:
    assert libp2p_patches.installed()
    for owner, name, fn in libp2p_patches.PATCHES:
        assert getattr(owner, name) is fn
        upstream = fn.daimon_upstream  # type: ignore[attr-defined]
        assert upstream.__module__.startswith("libp2p."), (name, upstream.__module__)
    libp2p_patches.install()  # idempotent: the upstream reference survives
    assert TrioTCPStream.read.daimon_upstream.__module__ == "libp2p.io.trio"  # type: ignore[attr-defined]
    assert isinstance(libp2p_pubsub.RpcQueue, functools.partial)
    assert "continuously_read_stream" in DaimonPubsub.__dict__


def test_install_refuses_another_libp2p_version() -> None:
    with pytest.raises(UnsupportedLibp2p) as info:
        libp2p_patches.check_version("0.8.2")
    assert (info.value.found, info.value.pinned) == ("0.8.2", libp2p_patches.PINNED_LIBP2P)
    libp2p_patches.check_version(libp2p_patches.PINNED_LIBP2P)


def test_nothing_patched_at_import() -> None:
    """Importing p2p (all of it) patches nothing; only install() does (checked in a fresh interpreter)."""
    import subprocess
    import sys

    code = ("import p2p, p2p.node, p2p.gossip, p2p.host, p2p.pubsub, p2p.libp2p_patches as m; "
            "print(any(getattr(o, n) is f for o, n, f in m.PATCHES))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "False"


# -- buffered TCP reads ---------------------------------------------------------
async def test_tcp_read_serves_short_reads_from_one_receive() -> None:
    a, b = trio.socket.socketpair()
    left, right = trio.SocketStream(a), trio.SocketStream(b)
    tcp = TrioTCPStream(right)
    await left.send_all(bytes(range(100)))
    assert await tcp.read(0) == b""
    assert await tcp.read(2) == bytes([0, 1])
    assert await tcp.read(10) == bytes(range(2, 12))
    assert await tcp.read(None) == bytes(range(12, 100))
    await left.send_all(b"xyz")
    assert await tcp.read(1000) == b"xyz"
    await left.aclose()
    assert await tcp.read(5) == b""  # EOF
    await right.aclose()
    assert await tcp.read(5) == b""  # closed locally, as upstream


# -- RPC reader -----------------------------------------------------------------
class _ChunkStream:
    """Returns the given chunks one per read (as yamux returns what it has)."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = list(chunks)

    async def read(self, n: int) -> bytes:
        await trio.lowlevel.checkpoint()
        if not self.chunks:
            return b""
        c = self.chunks.pop(0)
        if len(c) > n:  # at most n, like a yamux read
            self.chunks.insert(0, c[n:])
        return c[:n]


def _framed(*bodies: bytes) -> bytes:
    return b"".join(encode_uvarint(len(b)) + b for b in bodies)


@pytest.mark.parametrize("split", ["whole", "bytes", "mid"])
async def test_rpc_reader_splits_rpcs_wherever_chunks_end(split: str) -> None:
    bodies = [b"a" * 5, b"", b"b" * 300, b"c" * 70000]
    data = _framed(*bodies)
    if split == "whole":
        chunks = [data]
    elif split == "bytes":
        chunks = [data[i : i + 1] for i in range(len(data))]
    else:
        chunks = [data[:7], data[7:306], data[306:]]
    reader = _RpcReader(_ChunkStream(chunks), 1 << 20)
    assert [await reader.next_rpc() for _ in bodies] == bodies
    with pytest.raises(IncompleteReadError):
        await reader.next_rpc()


async def test_rpc_reader_refuses_oversize_before_the_body() -> None:
    stream = _ChunkStream([encode_uvarint(5000), b"never read"])
    with pytest.raises(MessageTooLarge):
        await _RpcReader(stream, 4096).next_rpc()
    assert stream.chunks == [b"never read"]


async def test_rpc_reader_refuses_overlong_varint_and_truncation() -> None:
    with pytest.raises(ParseError):
        await _RpcReader(_ChunkStream([b"\x80" * 11]), 1 << 20).next_rpc()
    with pytest.raises(IncompleteReadError):
        await _RpcReader(_ChunkStream([encode_uvarint(10) + b"abc"]), 1 << 20).next_rpc()


# -- yamux window updates --------------------------------------------------------
class _FakeYamux:
    def __init__(self) -> None:
        self.stream_buffers: dict[int, bytearray] = {1: bytearray()}

    def rtt(self) -> float:
        return 0.001


async def test_yamux_credit_returned_at_half_window_not_per_read() -> None:
    conn = _FakeYamux()
    stream = YamuxStream(1, conn, True)  # type: ignore[arg-type]
    sent: list[int] = []

    async def record(increment: int, skip_lock: bool = False) -> None:
        sent.append(increment)

    stream.send_window_update = record  # type: ignore[method-assign]
    chunk = 1100  # about one gossip RPC
    consumed = 0
    while consumed + chunk < DEFAULT_WINDOW_SIZE // 2:
        stream.recv_window -= chunk  # what handle_incoming does on a DATA frame
        consumed += chunk
        await stream._auto_tune_and_send_window_update(bytes_read=chunk)
    assert sent == []  # upstream sent one update per read here
    stream.recv_window -= chunk
    consumed += chunk
    await stream._auto_tune_and_send_window_update(bytes_read=chunk)
    assert len(sent) == 1 and sent[0] >= consumed  # all consumed credit back (plus auto-tune growth)
    assert stream.recv_window >= DEFAULT_WINDOW_SIZE


async def test_yamux_data_body_fast_path_and_fallback() -> None:
    class Session:
        def __init__(self, buffered: bytes) -> None:
            self.buffered = buffered
            self.low_watermark, self.high_watermark = 0, len(buffered)

        async def read(self, n: int) -> bytes:
            out, self.buffered = self.buffered[:n], self.buffered[n:]
            self.low_watermark += len(out)
            return out

    mux = Yamux.__new__(Yamux)
    mux.secured_conn = Session(b"0123456789")  # type: ignore[assignment]
    assert await mux._read_data_body(4) == b"0123"
    # Not enough buffered: upstream's path (with its deadline) reads the rest.
    assert await mux._read_data_body(6) == b"456789"
