"""/daimon/sync/1 between in-process hosts: ranges, batches, heads, bad requests."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
from libp2p.peer.id import ID

from p2p import NoPeers, ProtocolViolation, SyncHead, SyncProvider
from p2p.framing import read_control, write_control
from p2p.sync import SYNC_PROTOCOL

from p2p_helpers import CHAIN_ID, link, running_nodes


class Chain(SyncProvider):
    """An in-memory chain of ``height + 1`` blocks."""

    def __init__(self, height: int, big: int = 0) -> None:
        self.blocks = [b"block-%d-" % h + b"\x00" * big for h in range(height + 1)]

    def get_head(self, chain_id: bytes) -> SyncHead | None:
        if chain_id != CHAIN_ID:
            return None
        return SyncHead(len(self.blocks) - 1, b"\x11" * 32, 2 * len(self.blocks))

    async def get_blocks(self, chain_id: bytes, start_height: int, count: int) -> list[bytes]:
        await trio.lowlevel.checkpoint()  # async providers are allowed
        return self.blocks[start_height : start_height + count] if chain_id == CHAIN_ID else []

    def get_headers(self, chain_id: bytes, start_height: int, count: int) -> list[bytes]:
        return [b"hdr" + b[5:] for b in self.blocks[start_height : start_height + count]]


@pytest.mark.trio
async def test_sync_fetches_missing_range(tmp_path: Path) -> None:
    async with running_nodes(tmp_path, 3, providers=[Chain(200), None, Chain(50)]) as nodes:
        full, fresh, short = nodes
        await link(fresh, short)
        await link(fresh, full)
        head = await fresh.request_head(full.peer_id, CHAIN_ID)
        assert head == SyncHead(200, b"\x11" * 32, 402)
        assert await fresh.request_head(full.peer_id, b"\x99" * 32) is None
        # Catch up 0..200 in bounded batches (server caps each at 64).
        got: list[bytes] = []
        with trio.fail_after(30):
            while len(got) <= head.height:
                batch = await fresh.request_blocks(full.peer_id, CHAIN_ID, len(got), 100)
                assert 0 < len(batch) <= 64
                got += batch
        assert got == Chain(200).blocks
        # Any-peer mode skips the peer that lacks the range and finds the one that has it.
        with trio.fail_after(15):
            assert await fresh.request_blocks(None, CHAIN_ID, 150, 3) == Chain(200).blocks[150:153]
            assert await fresh.request_headers(full.peer_id, CHAIN_ID, 0, 1) == [b"hdr-0-"]
            assert await fresh.request_blocks(full.peer_id, CHAIN_ID, 500, 5) == []


@pytest.mark.trio
async def test_sync_response_bounded_by_bytes(tmp_path: Path) -> None:
    async with running_nodes(tmp_path, 2, providers=[Chain(40, big=1_000_000), None]) as nodes:
        await link(nodes[1], nodes[0])
        with trio.fail_after(30):
            batch = await nodes[1].request_blocks(nodes[0].peer_id, CHAIN_ID, 0, 40)
        assert 1 <= len(batch) <= 16  # 16 MiB response cap at ~1 MB per block
        assert batch == Chain(40, big=1_000_000).blocks[: len(batch)]


@pytest.mark.trio
async def test_sync_without_peers_raises(tmp_path: Path) -> None:
    async with running_nodes(tmp_path, 1) as nodes:
        with pytest.raises(NoPeers):
            await nodes[0].request_blocks(None, CHAIN_ID, 0, 1)


@pytest.mark.trio
async def test_malformed_sync_request_penalised(tmp_path: Path) -> None:
    async with running_nodes(tmp_path, 2, providers=[Chain(5), None]) as nodes:
        server, client = nodes
        await link(client, server)
        host = client.hosting.host
        with trio.fail_after(15):
            stream = await host.new_stream(ID.from_base58(server.peer_id), [SYNC_PROTOCOL])
            await write_control(stream, ["blocks", CHAIN_ID, -1, 5])  # negative height
            with pytest.raises(Exception):
                await read_control(stream)  # the server resets the stream
        stat = {s.peer_id: s for s in server.peers()}[client.peer_id]
        assert stat.penalty > 0


@pytest.mark.trio
async def test_client_refuses_oversized_reply(tmp_path: Path) -> None:
    async def liar(stream) -> None:  # type: ignore[no-untyped-def]
        await read_control(stream)
        await write_control(stream, ["ok", 2])
        await stream.write((5_000_000).to_bytes(4, "big"))  # announces an item over the 2 MiB cap
        await stream.close()

    async with running_nodes(tmp_path, 2) as (server, client):
        server.hosting.host.set_stream_handler(SYNC_PROTOCOL, liar)
        await link(client, server)
        with trio.fail_after(15), pytest.raises(ProtocolViolation):
            await client.request_blocks(server.peer_id, CHAIN_ID, 0, 2)
        assert {s.peer_id: s for s in client.peers()}[server.peer_id].penalty > 0
