"""``/daimon/sync/1``: headers and blocks by height range, for catch-up.

Request (one control frame, msgpack array):
    ["head", chain_id]                       -> ["ok", height, block_hash, weight] | ["none"]
    ["blocks"|"headers", chain_id, start, n] -> ["ok", k] then k raw-bytes frames
Errors: ["busy"] (server at its concurrency limit), ["err", text].

Bounded both ways: the server clamps ``n`` to ``max_batch`` and stops adding
items past ``max_response_bytes``; the client refuses more than it asked for and
any item over ``max_item_bytes``. Every stream is closed under a deadline.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import trio
from libp2p.abc import IHost, INetStream
from libp2p.custom_types import TProtocol

from p2p.abc import SyncHead, SyncProvider
from p2p.errors import NoPeers, P2PError, ProtocolViolation, SyncError
from p2p.framing import (
    expect_bytes,
    expect_int,
    read_bytes_frame,
    read_control,
    write_bytes_frame,
    write_control,
)
from p2p.peers import PeerBook
from p2p.serving import maybe_await, request_stream, serve_stream

log = logging.getLogger(__name__)

SYNC_PROTOCOL = TProtocol("/daimon/sync/1")
MAX_HEIGHT = 2**63 - 1
T = TypeVar("T")


class SyncService:
    """Serves our chains to peers and fetches ranges from them."""

    def __init__(
        self,
        host: IHost,
        book: PeerBook,
        provider: SyncProvider | None,
        *,
        max_batch: int = 64,
        max_item_bytes: int = 2 * 1024 * 1024,
        max_response_bytes: int = 16 * 1024 * 1024,
        request_timeout_s: float = 15.0,
        max_concurrent_serves: int = 8,
        on_ban: Callable[[str], None] | None = None,
    ) -> None:
        self.host = host
        self.book = book
        self.provider = provider
        self.max_batch = max_batch
        self.max_item_bytes = max_item_bytes
        self.max_response_bytes = max_response_bytes
        self.request_timeout_s = request_timeout_s
        self.on_ban = on_ban
        self._serving = trio.Semaphore(max_concurrent_serves)
        host.set_stream_handler(SYNC_PROTOCOL, self._handle)

    # -- server -------------------------------------------------------------
    async def _handle(self, stream: INetStream) -> None:
        await serve_stream(stream, "sync", self.book, self.on_ban, self._answer)

    async def _answer(self, stream: INetStream, peer: str) -> None:
        with trio.fail_after(self.request_timeout_s):
            if self._serving.value == 0:
                await write_control(stream, ["busy"])
            else:
                async with self._serving:
                    await self._serve(stream, peer)
            await stream.close()

    async def _serve(self, stream: INetStream, peer: str) -> None:
        req = await read_control(stream)
        op = req[0]
        if op not in ("head", "blocks", "headers") or len(req) != (2 if op == "head" else 4):
            raise ProtocolViolation(f"bad sync request {op!r}/{len(req)}")
        chain_id = expect_bytes(req[1], "chain_id", length=32)
        self.book.record(peer).sync_served += 1
        if self.provider is None:
            await write_control(stream, ["err", "no chains served"])
            return
        if op == "head":
            head = await maybe_await(self.provider.get_head(chain_id))
            reply: list[Any] = ["none"] if head is None else ["ok", head.height, head.block_hash, head.weight]
            await write_control(stream, reply)
            return
        start = expect_int(req[2], "start", 0, MAX_HEIGHT)
        count = min(expect_int(req[3], "count", 1, MAX_HEIGHT), self.max_batch)
        getter = self.provider.get_blocks if op == "blocks" else self.provider.get_headers
        items = await maybe_await(getter(chain_id, start, count))
        out: list[bytes] = []
        total = 0
        for item in items[:count]:
            if len(item) > self.max_item_bytes or (out and total + len(item) > self.max_response_bytes):
                break
            out.append(item)
            total += len(item)
        await write_control(stream, ["ok", len(out)])
        for item in out:
            await write_bytes_frame(stream, item)

    # -- client -------------------------------------------------------------
    async def request_head(self, peer: str, chain_id: bytes) -> SyncHead | None:
        """Ask ``peer`` for its head of ``chain_id``."""
        reply: list[Any] = await self._request(peer, ["head", chain_id], self._read_head)
        return reply[0]

    async def _read_head(self, stream: INetStream) -> list[Any]:
        r = await read_control(stream)
        if r[0] == "none":
            return [None]
        if r[0] != "ok" or len(r) != 4:
            _raise_status(r)
        return [
            SyncHead(
                height=expect_int(r[1], "height", 0, MAX_HEIGHT),
                block_hash=expect_bytes(r[2], "block_hash", length=32),
                weight=expect_int(r[3], "weight", 0, 2**64),
            )
        ]

    async def request_range(self, peer: str | None, op: str, chain_id: bytes, start: int, count: int) -> list[bytes]:
        """Fetch up to ``count`` items of ``op`` ("blocks"/"headers") from ``start``.

        With ``peer`` None, connected peers are tried in order of good behaviour
        until one answers with at least one item (an empty answer from everyone
        returns ``[]``).
        """
        if count < 1 or start < 0:
            raise ValueError("need start >= 0 and count >= 1")
        count = min(count, self.max_batch)

        async def read(stream: INetStream) -> list[bytes]:
            r = await read_control(stream)
            if r[0] != "ok" or len(r) != 2:
                _raise_status(r)
            n = expect_int(r[1], "count", 0, count)
            items: list[bytes] = []
            budget = self.max_response_bytes  # a lying server cannot make us hold n x item cap
            for _ in range(n):
                item = await read_bytes_frame(stream, min(self.max_item_bytes, budget))
                budget -= len(item)
                items.append(item)
            return items

        req = [op, chain_id, start, count]
        if peer is not None:
            return await self._request(peer, req, read)
        candidates = self.book.connected_peers()
        if not candidates:
            raise NoPeers("no connected peer to sync from")
        last: P2PError | None = None
        for p in candidates:
            try:
                items = await self._request(p, req, read)
            except P2PError as exc:
                last = exc
                continue
            if items:
                return items
        if last is not None and all(not self.book.is_connected(p) for p in candidates):
            raise last
        return []

    async def _request(
        self, peer: str, req: list[Any], read: Callable[[INetStream], Awaitable[T]]
    ) -> T:
        return await request_stream(self.host, self.book, self.on_ban, SYNC_PROTOCOL, peer, req, read,
                                    timeout_s=self.request_timeout_s, failure=SyncError)


def _raise_status(reply: list[Any]) -> None:
    if reply[0] == "busy":
        raise SyncError("peer busy")
    if reply[0] == "err" and len(reply) == 2 and isinstance(reply[1], str):
        raise SyncError(f"peer error: {reply[1][:200]}")
    raise ProtocolViolation(f"unexpected sync reply {reply[0]!r}")

