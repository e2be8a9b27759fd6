"""/daimon/problems/1 between in-process hosts: list, get, caps both ways, bad requests, bans."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio
from libp2p.peer.id import ID

from p2p import P2PError, ProblemListing, ProblemProvider, ProblemsError, ProtocolViolation
from p2p.framing import read_control, write_bytes_frame, write_control
from p2p.problems import MAX_LISTED, PROBLEMS_PROTOCOL

from p2p_helpers import link, running_nodes


def chain(i: int) -> bytes:
    return bytes([i]) * 32


class Problems(ProblemProvider):
    """``n`` problems; problem i's proposal is ``size`` bytes."""

    def __init__(self, n: int, size: int = 100) -> None:
        self.proposals = {chain(i): bytes([i]) * size for i in range(n)}

    def list_problems(self) -> list[ProblemListing]:
        return [ProblemListing(cid, i - 1) for i, cid in enumerate(self.proposals)]  # heights -1, 0, 1...

    async def get_proposal(self, chain_id: bytes) -> bytes | None:
        await trio.lowlevel.checkpoint()  # async providers are allowed
        return self.proposals.get(chain_id)


def penalty(node: Any, peer: str) -> float:
    return {s.peer_id: s for s in node.peers()}[peer].penalty


@pytest.mark.trio
async def test_list_and_get(tmp_path: Path) -> None:
    async with running_nodes(tmp_path, 3) as (server, client, bare):
        server.problems.provider = Problems(3)
        await link(client, server)
        await link(client, bare)
        with trio.fail_after(15):
            listed = await client.request_problem_list(server.peer_id)
            assert listed == [ProblemListing(chain(0), -1), ProblemListing(chain(1), 0), ProblemListing(chain(2), 1)]
            assert await client.request_proposal(server.peer_id, chain(1)) == b"\x01" * 100
            assert await client.request_proposal(server.peer_id, chain(9)) is None
            with pytest.raises(ProblemsError, match="no problems served"):
                await client.request_problem_list(bare.peer_id)  # a node without a provider says so
        assert penalty(client, server.peer_id) == 0 and penalty(server, client.peer_id) == 0


@pytest.mark.trio
async def test_server_caps_its_list_and_proposals(tmp_path: Path) -> None:
    """The server lists at most its ``max_listed`` and never sends a proposal over its cap."""
    cap = 4
    async with running_nodes(tmp_path, 2, problems_max_listed=cap, problems_max_proposal_bytes=1000) as nodes:
        server, client = nodes
        server.problems.provider = Problems(cap + 6, size=1001)
        client.problems.max_listed = MAX_LISTED  # the client would take more: the server's cap bounds it
        await link(client, server)
        with trio.fail_after(15):
            assert len(await client.request_problem_list(server.peer_id)) == cap
            assert await client.request_proposal(server.peer_id, chain(0)) is None  # 1001 > 1000


@pytest.mark.trio
@pytest.mark.parametrize("what", ["too many", "twice", "bad height", "bad id", "proposal over cap", "bad status"])
async def test_client_refuses_a_reply_over_its_caps(tmp_path: Path, what: str) -> None:
    """Each lie is a protocol violation and costs the liar a penalty."""
    cap, proposal_cap = 4, 1000
    entry = [chain(1), 3]

    async def liar(stream: Any) -> None:
        req = await read_control(stream)
        if what == "too many":
            await write_control(stream, ["ok", cap + 1])  # refused before any entry is read
        elif what == "twice":
            await write_control(stream, ["ok", 2])
            await write_control(stream, entry)
            await write_control(stream, entry)
        elif what == "bad height":
            await write_control(stream, ["ok", 1])
            await write_control(stream, [chain(1), -2])  # -1 is the lowest height (no Problem block)
        elif what == "bad id":
            await write_control(stream, ["ok", 1])
            await write_control(stream, [b"\x01" * 31, 0])
        elif what == "proposal over cap":
            assert req[0] == "get"
            await write_control(stream, ["ok"])
            await write_bytes_frame(stream, b"\x00" * (proposal_cap + 1))
        else:
            await write_control(stream, ["maybe"])
        await stream.close()

    async with running_nodes(tmp_path, 2, problems_max_listed=cap, problems_max_proposal_bytes=proposal_cap) as nodes:
        server, client = nodes
        server.hosting.host.set_stream_handler(PROBLEMS_PROTOCOL, liar)
        await link(client, server)
        with trio.fail_after(15), pytest.raises(ProtocolViolation):
            if what == "proposal over cap":
                await client.request_proposal(server.peer_id, chain(1))
            else:
                await client.request_problem_list(server.peer_id)
        assert penalty(client, server.peer_id) > 0


@pytest.mark.trio
@pytest.mark.parametrize("request_", [["list", 1], ["get", b"\x01" * 31], ["get"], ["blocks", b"\x01" * 32, 0, 1]])
async def test_malformed_request_penalised(tmp_path: Path, request_: list[Any]) -> None:
    async with running_nodes(tmp_path, 2) as (server, client):
        server.problems.provider = Problems(1)
        await link(client, server)
        with trio.fail_after(15):
            stream = await client.hosting.host.new_stream(ID.from_base58(server.peer_id), [PROBLEMS_PROTOCOL])
            await write_control(stream, request_)
            with pytest.raises(Exception):
                await read_control(stream)  # the server resets the stream
        assert penalty(server, client.peer_id) > 0


@pytest.mark.trio
async def test_banned_peer_is_not_served(tmp_path: Path) -> None:
    async with running_nodes(tmp_path, 2) as (server, client):
        server.problems.provider = Problems(1)
        await link(client, server)
        server.ban(client.peer_id)
        with trio.fail_after(30), pytest.raises(P2PError):
            await client.request_problem_list(server.peer_id)
