"""/daimon/content/1 between in-process hosts: hash checks, caps, retry and resume."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
import trio
from libp2p.abc import INetStream

from p2p import ContentHashMismatch, ContentNotFound, ContentTooLarge, P2PNode
from p2p.content import CONTENT_PROTOCOL
from p2p.framing import read_control, write_control

from p2p_helpers import link, running_nodes

SIZE = 6 * 1024 * 1024 + 123  # multi-MB, not a multiple of the chunk size


def stats(node: P2PNode, peer: P2PNode):
    return {s.peer_id: s for s in node.peers()}[peer.peer_id]


@pytest.mark.trio
async def test_multi_mb_transfer_verifies_hash(tmp_path: Path) -> None:
    data = os.urandom(SIZE)
    async with running_nodes(tmp_path, 2) as (server, client):
        await link(client, server)
        cid = server.store.put(data)
        assert cid == hashlib.sha256(data).digest()
        with trio.fail_after(60):
            path = await client.fetch_content(cid, max_bytes=SIZE)
        assert path.read_bytes() == data and client.store.verify(cid)
        assert stats(server, client).content_bytes_sent == SIZE
        assert await client.content_size_at(server.peer_id, cid) == SIZE
        assert await client.content_size_at(server.peer_id, b"\x01" * 32) is None


@pytest.mark.trio
async def test_tampered_content_rejected_and_holder_penalised(tmp_path: Path) -> None:
    data = os.urandom(SIZE)
    cid = hashlib.sha256(data).digest()
    async with running_nodes(tmp_path, 3) as (liar, client, honest):
        await link(client, liar)
        tampered = bytearray(data)
        tampered[SIZE // 2] ^= 0xFF
        liar.store.path(cid).write_bytes(bytes(tampered))  # wrong bytes under the id
        with trio.fail_after(60), pytest.raises(ContentHashMismatch):
            await client.fetch_content(cid, max_bytes=SIZE, peers=[liar.peer_id])
        assert not client.store.has(cid)
        assert list(client.store.tmp_dir.iterdir()) == []  # no partial left behind
        assert stats(client, liar).banned_for_s > 0  # serving bad bytes is a ban on its own
        # With an honest holder also asked, the fetch succeeds from it.
        await link(client, honest)
        honest.store.put(data)
        with trio.fail_after(60):
            path = await client.fetch_content(cid, max_bytes=SIZE, peers=[liar.peer_id, honest.peer_id])
        assert path.read_bytes() == data


@pytest.mark.trio
async def test_oversized_content_refused(tmp_path: Path) -> None:
    data = os.urandom(SIZE)
    async with running_nodes(tmp_path, 2) as (server, client):
        await link(client, server)
        cid = server.store.put(data)
        with trio.fail_after(30), pytest.raises(ContentTooLarge):
            await client.fetch_content(cid, max_bytes=SIZE - 1)
        assert not client.store.has(cid)
        assert stats(server, client).content_bytes_sent == 0  # refused before any bulk bytes


@pytest.mark.trio
async def test_missing_content_not_found(tmp_path: Path) -> None:
    async with running_nodes(tmp_path, 2) as (server, client):
        await link(client, server)
        with trio.fail_after(30), pytest.raises(ContentNotFound):
            await client.fetch_content(b"\x42" * 32, max_bytes=1000)


@pytest.mark.trio
@pytest.mark.parametrize("misbehaviour", ["reset", "stall"])
async def test_broken_transfer_resumes_from_another_peer(tmp_path: Path, misbehaviour: str) -> None:
    """A holder that resets mid-way, or stops sending with the stream left open (one stall
    timeout), passes the fetch to the next peer, which continues from the same offset."""
    data = os.urandom(SIZE)
    cid = hashlib.sha256(data).digest()
    half = SIZE // 2

    async def serve_half_then_fail(stream: INetStream) -> None:
        req = await read_control(stream)
        await write_control(stream, ["ok", SIZE])
        await stream.write(data[req[2] : half])
        if misbehaviour == "reset":
            await stream.reset()
        else:
            await trio.sleep_forever()

    async with running_nodes(tmp_path, 3, content_stall_timeout_s=1.0) as (flaky, client, honest):
        flaky.hosting.host.set_stream_handler(CONTENT_PROTOCOL, serve_half_then_fail)
        honest.store.put(data)
        await link(client, flaky)
        await link(client, honest)
        with trio.fail_after(60):
            path = await client.fetch_content(cid, max_bytes=SIZE, peers=[flaky.peer_id, honest.peer_id])
        assert path.read_bytes() == data
        # The honest peer only sent what was missing: the download resumed at the offset the client
        # reached. A stalled stream delivered all `half` bytes, so the resume is exact. A reset may
        # discard bytes the flaky peer wrote but the client had not read yet (yamux drops a reset
        # stream's buffers), so there the client reached some offset in [0, half].
        sent = stats(honest, client).content_bytes_sent
        if misbehaviour == "stall":
            assert sent == SIZE - half
        else:
            assert SIZE - half <= sent <= SIZE
