"""``p2p.reqresp``: streams reused across requests; caps, deadlines, bans and penalties as for sync.

Every numeric bound here comes from the limits the test sets or from ``PeerBook``'s
defaults (ban threshold 5, a protocol violation weighs ``WEIGHT_PROTOCOL`` = 2).
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import trio
from libp2p.network.stream.exceptions import StreamError
from libp2p.peer.id import ID

from p2p import MalformedMessage, P2PNode, ProtocolViolation, ReqRespLimits, RequestFailed, RequestTimeout
from p2p.framing import _LEN, encode_frame, read_bytes_frame
from p2p.peers import WEIGHT_PROTOCOL

from p2p_helpers import link, running_nodes

PROTOCOL = "/test/echo/1"
LIMITS = ReqRespLimits(max_request_bytes=1024, max_response_bytes=4096, request_timeout_s=5.0,
                       idle_timeout_s=30.0, max_concurrent=4, max_streams_per_peer=2)


class EchoCodec:
    """Requests and responses are bytes; anything starting with b"bad" is malformed."""

    def encode_request(self, request: bytes) -> bytes:
        return request

    def decode_request(self, data: bytes) -> bytes:
        if data.startswith(b"bad"):
            raise MalformedMessage("a bad request")
        return data

    def encode_response(self, response: bytes) -> bytes:
        return response

    def decode_response(self, data: bytes) -> bytes:
        if data.startswith(b"bad"):
            raise MalformedMessage("a bad response")
        return data


async def echo(peer: str, request: bytes) -> bytes:
    if request.startswith(b"big"):
        return b"x" * (LIMITS.max_response_bytes + 1)
    if request.startswith(b"slow"):
        await trio.sleep(10 * LIMITS.request_timeout_s)
    if request.startswith(b"reply-bad"):
        return b"bad reply"
    return b"echo:" + request


def serve(node: P2PNode, limits: ReqRespLimits = LIMITS):  # type: ignore[no-untyped-def]
    service = node.request_response(PROTOCOL, EchoCodec(), limits)
    service.serve(echo)
    return service


def count_new_streams(node: P2PNode) -> list[int]:
    """Wrap the host's ``new_stream`` to count the streams it opens."""
    host = node.hosting.host
    opened = [0]
    original = host.new_stream

    async def counting(*args, **kwargs):  # type: ignore[no-untyped-def]
        opened[0] += 1
        return await original(*args, **kwargs)

    host.new_stream = counting  # type: ignore[method-assign]
    return opened


def penalty_of(node: P2PNode, peer: str) -> float:
    return {s.peer_id: s for s in node.peers()}[peer].penalty


async def raw_exchange(client: P2PNode, server: P2PNode, data: bytes) -> bytes:
    """Write ``data`` on a fresh raw stream and read one response frame (b"" if the server reset)."""
    stream = await client.hosting.host.new_stream(ID.from_base58(server.peer_id), [PROTOCOL])
    try:
        await stream.write(data)
        return await read_bytes_frame(stream, LIMITS.max_response_bytes)
    except (StreamError, ProtocolViolation):  # reset, or ended before a whole frame
        return b""


async def test_requests_reuse_one_stream(tmp_path: Path) -> None:
    async with running_nodes(tmp_path, 2) as (server, client):
        service = serve(server)
        await link(client, server)
        opened = count_new_streams(client)
        rr = client.request_response(PROTOCOL, EchoCodec(), LIMITS)
        with trio.fail_after(30):
            for i in range(20):
                assert await rr.request(server.peer_id, b"%d" % i) == b"echo:%d" % i
        assert opened[0] == 1
        assert service.served == 20


async def test_oversize_request_refused_penalised_and_the_node_serves_on(tmp_path: Path) -> None:
    async with running_nodes(tmp_path, 3) as (server, attacker, honest):
        serve(server)
        await link(attacker, server)
        await link(honest, server)
        with trio.fail_after(15):
            # A length prefix one byte over the cap, and a body that is never read.
            reply = await raw_exchange(attacker, server, _LEN.pack(LIMITS.max_request_bytes + 1) + b"x" * 64)
        assert reply == b""
        assert penalty_of(server, attacker.peer_id) >= WEIGHT_PROTOCOL * 0.99  # decayed for a moment at most
        rr = honest.request_response(PROTOCOL, EchoCodec(), LIMITS)
        with trio.fail_after(15):
            assert await rr.request(server.peer_id, b"still here") == b"echo:still here"


async def test_malformed_requests_penalised_until_banned(tmp_path: Path) -> None:
    async with running_nodes(tmp_path, 2) as (server, attacker):
        service = serve(server)
        await link(attacker, server)
        # The default book bans at 5 units; each malformed request costs WEIGHT_PROTOCOL (2):
        # the third one bans (the decay over a few seconds cannot bring 6 below 5).
        to_ban = math.ceil(server.book.ban_threshold / WEIGHT_PROTOCOL)
        with trio.fail_after(30):
            for _ in range(to_ban):
                if server.book.is_banned(attacker.peer_id):
                    break
                assert await raw_exchange(attacker, server, encode_frame(b"bad request")) == b""
        assert server.book.is_banned(attacker.peer_id)
        assert service.refused >= to_ban
        assert service.served == 0


async def test_banned_peer_is_refused_at_the_stream(tmp_path: Path) -> None:
    async with running_nodes(tmp_path, 2) as (server, client):
        serve(server)
        await link(client, server)
        rr = client.request_response(PROTOCOL, EchoCodec(), LIMITS)
        with trio.fail_after(15):
            assert await rr.request(server.peer_id, b"before") == b"echo:before"
        server.book.ban(client.peer_id)  # the book alone: the connection may linger
        with trio.fail_after(15), pytest.raises((RequestFailed, ProtocolViolation)):
            await rr.request(server.peer_id, b"after")


async def test_oversize_or_malformed_response_penalises_the_server(tmp_path: Path) -> None:
    async with running_nodes(tmp_path, 2) as (server, client):
        serve(server)
        await link(client, server)
        rr = client.request_response(PROTOCOL, EchoCodec(), LIMITS)
        with trio.fail_after(15), pytest.raises(ProtocolViolation):
            await rr.request(server.peer_id, b"big")
        first = penalty_of(client, server.peer_id)
        assert first >= WEIGHT_PROTOCOL * 0.99
        with trio.fail_after(15), pytest.raises(MalformedMessage):
            await rr.request(server.peer_id, b"reply-bad")
        assert penalty_of(client, server.peer_id) > first


async def test_slow_handler_hits_the_deadline(tmp_path: Path) -> None:
    limits = ReqRespLimits(max_request_bytes=1024, max_response_bytes=4096, request_timeout_s=0.5)
    async with running_nodes(tmp_path, 2) as (server, client):
        serve(server, limits)
        await link(client, server)
        rr = client.request_response(PROTOCOL, EchoCodec(), limits)
        t0 = trio.current_time()
        # The client gives up at its own deadline; 10x it bounds a loaded machine.
        with trio.fail_after(10 * limits.request_timeout_s), pytest.raises(RequestTimeout):
            await rr.request(server.peer_id, b"slow")
        assert trio.current_time() - t0 >= limits.request_timeout_s
        with trio.fail_after(15):
            assert await rr.request(server.peer_id, b"next") == b"echo:next"  # a new stream works


async def test_streams_per_peer_are_capped_without_penalty(tmp_path: Path) -> None:
    async with running_nodes(tmp_path, 2) as (server, client):
        service = serve(server)
        await link(client, server)
        host = client.hosting.host
        with trio.fail_after(15):
            held = [await host.new_stream(ID.from_base58(server.peer_id), [PROTOCOL])
                    for _ in range(LIMITS.max_streams_per_peer)]
            for stream in held:  # make sure the server is serving each before the extra one
                await stream.write(encode_frame(b"hold"))
                assert await read_bytes_frame(stream, LIMITS.max_response_bytes) == b"echo:hold"
            assert await raw_exchange(client, server, encode_frame(b"one too many")) == b""
        assert service.refused == 1
        assert penalty_of(server, client.peer_id) == 0.0


async def test_idle_streams_are_not_reused(tmp_path: Path) -> None:
    limits = ReqRespLimits(max_request_bytes=1024, max_response_bytes=4096, idle_timeout_s=1.0)
    async with running_nodes(tmp_path, 2) as (server, client):
        serve(server, limits)
        await link(client, server)
        opened = count_new_streams(client)
        rr = client.request_response(PROTOCOL, EchoCodec(), limits)
        with trio.fail_after(15):
            assert await rr.request(server.peer_id, b"a") == b"echo:a"
            await trio.sleep(limits.idle_timeout_s)  # past the client's reuse window (half the server's)
            assert await rr.request(server.peer_id, b"b") == b"echo:b"
            assert await rr.request(server.peer_id, b"c") == b"echo:c"
        assert opened[0] == 2  # a fresh stream after the idle spell, reused right after
