"""``/daimon/problems/1``: which problems a peer follows, and their signed proposals.

Gossip on ``/daimon/problems`` reaches only nodes that are up while someone publishes,
and only a problem's creator publishes; this protocol lets a node that joins later ask
any follower instead, so a problem outlives its creator.

Request (one control frame, msgpack array):
    ["list"]           -> ["ok", k] then k control frames [chain_id, height]
    ["get", chain_id]  -> ["ok"] then one raw-bytes frame (the encoded proposal) | ["none"]
Errors: ["busy"] (server at its concurrency limit), ["err", text].

Bounded both ways: the server lists at most ``max_listed`` problems and serves no
proposal over ``max_proposal_bytes``; the client refuses a longer list, a chain id
listed twice, a height outside [-1, 2^63 - 1] and a proposal over the cap (each a
protocol violation: a penalty). Whether the proposal's hash is the chain id asked for
is the node's check, not this layer's (it knows no proposal encoding).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import trio
from libp2p.abc import IHost, INetStream
from libp2p.custom_types import TProtocol

from p2p.abc import ProblemListing, ProblemProvider
from p2p.errors import ProblemsError, ProtocolViolation
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

PROBLEMS_PROTOCOL = TProtocol("/daimon/problems/1")
MAX_HEIGHT = 2**63 - 1
# A node follows a handful of problems; 256 bounds one reply to ~13 KiB of entries
# (a 32-byte id and a height, ~45 bytes framed) and what one peer can add to a listener.
MAX_LISTED = 256
# The protocol's cap on one proposal (``/daimon/problems`` gossip carries the same bytes).
MAX_PROPOSAL_BYTES = 256 * 1024
T = TypeVar("T")


class ProblemsService:
    """Serves the problems we follow to peers and asks peers for theirs."""

    def __init__(
        self,
        host: IHost,
        book: PeerBook,
        provider: ProblemProvider | None,
        *,
        max_listed: int = MAX_LISTED,
        max_proposal_bytes: int = MAX_PROPOSAL_BYTES,
        request_timeout_s: float = 15.0,
        max_concurrent_serves: int = 8,
        on_ban: Callable[[str], None] | None = None,
    ) -> None:
        self.host = host
        self.book = book
        self.provider = provider
        self.max_listed = max_listed
        self.max_proposal_bytes = max_proposal_bytes
        self.request_timeout_s = request_timeout_s
        self.on_ban = on_ban
        self._serving = trio.Semaphore(max_concurrent_serves)
        host.set_stream_handler(PROBLEMS_PROTOCOL, self._handle)

    # -- server -------------------------------------------------------------
    async def _handle(self, stream: INetStream) -> None:
        await serve_stream(stream, "problems", self.book, self.on_ban, self._answer)

    async def _answer(self, stream: INetStream, peer: str) -> None:
        with trio.fail_after(self.request_timeout_s):
            if self._serving.value == 0:
                await write_control(stream, ["busy"])
            else:
                async with self._serving:
                    await self._serve(stream)
            await stream.close()

    async def _serve(self, stream: INetStream) -> None:
        req = await read_control(stream)
        op = req[0]
        if not ((op == "list" and len(req) == 1) or (op == "get" and len(req) == 2)):
            raise ProtocolViolation(f"bad problems request {op!r}/{len(req)}")
        chain_id = expect_bytes(req[1], "chain_id", length=32) if op == "get" else b""
        if self.provider is None:
            await write_control(stream, ["err", "no problems served"])
            return
        if op == "list":
            listings = (await maybe_await(self.provider.list_problems()))[: self.max_listed]
            await write_control(stream, ["ok", len(listings)])
            for listing in listings:
                await write_control(stream, [listing.chain_id, listing.height])
            return
        proposal = await maybe_await(self.provider.get_proposal(chain_id))
        if proposal is None or len(proposal) > self.max_proposal_bytes:
            await write_control(stream, ["none"])
            return
        await write_control(stream, ["ok"])
        await write_bytes_frame(stream, proposal)

    # -- client -------------------------------------------------------------
    async def request_list(self, peer: str) -> list[ProblemListing]:
        """The problems ``peer`` follows, with its heights."""

        async def read(stream: INetStream) -> list[ProblemListing]:
            reply = await read_control(stream)
            if reply[0] != "ok" or len(reply) != 2:
                _raise_status(reply)
            count = expect_int(reply[1], "count", 0, self.max_listed)
            listings: dict[bytes, ProblemListing] = {}
            for _ in range(count):
                entry = await read_control(stream)
                if len(entry) != 2:
                    raise ProtocolViolation(f"a problem entry has {len(entry)} fields, not 2")
                chain_id = expect_bytes(entry[0], "chain_id", length=32)
                if chain_id in listings:
                    raise ProtocolViolation(f"chain {chain_id.hex()[:16]} listed twice")
                listings[chain_id] = ProblemListing(chain_id, expect_int(entry[1], "height", -1, MAX_HEIGHT))
            return list(listings.values())

        return await self._request(peer, ["list"], read)

    async def request_proposal(self, peer: str, chain_id: bytes) -> bytes | None:
        """The proposal ``peer`` holds for ``chain_id`` (unchecked bytes), or None."""
        if len(chain_id) != 32:
            raise ValueError("chain id must be 32 bytes")

        async def read(stream: INetStream) -> bytes | None:
            reply = await read_control(stream)
            if reply == ["none"]:
                return None
            if reply != ["ok"]:
                _raise_status(reply)
            return await read_bytes_frame(stream, self.max_proposal_bytes)

        return await self._request(peer, ["get", chain_id], read)

    async def _request(self, peer: str, req: list[Any], read: Callable[[INetStream], Awaitable[T]]) -> T:
        return await request_stream(self.host, self.book, self.on_ban, PROBLEMS_PROTOCOL, peer, req, read,
                                    timeout_s=self.request_timeout_s, failure=ProblemsError)


def _raise_status(reply: list[Any]) -> None:
    if reply[0] == "busy" and len(reply) == 1:
        raise ProblemsError("peer busy")
    if reply[0] == "err" and len(reply) == 2 and isinstance(reply[1], str):
        raise ProblemsError(f"peer error: {reply[1][:200]}")
    raise ProtocolViolation(f"unexpected problems reply {str(reply[0])[:40]!r}")
