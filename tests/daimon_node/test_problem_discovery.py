"""A node learns problems from any peer over /daimon/problems/1, and trusts only a proposal
whose hash is the chain id the peer listed (daimon_node/daemon/problems.py)."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

from chain.devnet import Devnet, DevnetConfig
from chain.types import Proposal
from daimon_node.daemon.chains import ChainManager
from daimon_node.clock import SystemClock
from daimon_node.daemon.problems import ForgedProposal, ProblemDirectory, verify_fetched_proposal
from p2p import ContentStore, P2PConfig, P2PNode, ProblemListing, ProblemProvider
from p2p.peers import WEIGHT_BAD_CONTENT


def proposal(seed: int) -> Proposal:
    return Devnet(DevnetConfig(seed=seed)).proposal


class Serving(ProblemProvider):
    """A peer that lists ``listed`` and answers every get with ``served``."""

    def __init__(self, listed: bytes, served: bytes) -> None:
        self.listed, self.served = listed, served

    def list_problems(self) -> list[ProblemListing]:
        return [ProblemListing(self.listed, 7)]

    def get_proposal(self, chain_id: bytes) -> bytes | None:
        return self.served if chain_id == self.listed else None


@asynccontextmanager
async def learner_and_peer(tmp_path: Path,
                           provider: ProblemProvider) -> AsyncIterator[tuple[ProblemDirectory, P2PNode, P2PNode]]:
    """A directory over an empty data dir on one node, connected to a peer serving ``provider``."""
    content = ContentStore(tmp_path / "learner" / "content")
    chains = ChainManager(tmp_path / "learner", content, SystemClock())
    directory = ProblemDirectory(chains, follows=lambda chain_id: True)
    learner = P2PNode(P2PConfig(seed=b"\x01" * 32, content_dir=tmp_path / "learner" / "content"),
                      store=content, problem_provider=directory)
    peer = P2PNode(P2PConfig(seed=b"\x02" * 32, content_dir=tmp_path / "peer"), problem_provider=provider)
    async with trio.open_nursery() as nursery:
        with trio.fail_after(15):
            await nursery.start(learner.run)
            await nursery.start(peer.run)
            await learner.connect(peer.listen_addrs()[0])
        yield directory, learner, peer
        nursery.cancel_scope.cancel()
    chains.close()


def test_verify_refuses_a_proposal_of_another_chain() -> None:
    asked, other = proposal(1), proposal(2)
    assert verify_fetched_proposal(asked.chain_id, asked.encode()) == asked
    with pytest.raises(ForgedProposal) as err:
        verify_fetched_proposal(asked.chain_id, other.encode())
    assert err.value.chain_id == asked.chain_id and err.value.got == other.chain_id
    with pytest.raises(ForgedProposal) as err:
        verify_fetched_proposal(asked.chain_id, asked.encode()[:-1] + bytes([asked.encode()[-1] ^ 1]))
    assert err.value.got is None  # the signature no longer verifies: nothing decoded


def resigned_name(p: Proposal, name: str) -> bytes:
    """A proposal with another name, its old signature kept: its hash is a new chain id's."""
    return dataclasses.replace(p, params=dataclasses.replace(p.params, name=name)).encode()


@pytest.mark.trio
@pytest.mark.parametrize("forgery", ["another chain's proposal", "altered bytes", "not a proposal"])
async def test_forged_proposal_is_refused_and_its_server_penalised(tmp_path: Path, forgery: str) -> None:
    asked = proposal(1)
    served = {"another chain's proposal": proposal(2).encode(),
              "altered bytes": resigned_name(asked, "renamed"),
              "not a proposal": b"\x93\x01\x02\x03"}[forgery]
    followed: list[Proposal] = []

    async def follow(p: Proposal) -> None:
        followed.append(p)

    async with learner_and_peer(tmp_path, Serving(asked.chain_id, served)) as (directory, learner, peer):
        with trio.fail_after(30):
            await directory.ask(learner, peer.peer_id, follow)
        stats = {s.peer_id: s for s in learner.peers()}[peer.peer_id]
    assert followed == []
    assert directory.forged == 1
    assert directory.summaries() == []  # neither followed nor shown
    # The content-mismatch weight reaches the default ban threshold: one forgery bans its server
    # (the ban resets the penalty, so the ban is what shows).
    assert WEIGHT_BAD_CONTENT >= P2PConfig.ban_threshold
    assert stats.banned_for_s > 0


@pytest.mark.trio
async def test_a_true_proposal_is_followed_and_its_holder_shown(tmp_path: Path) -> None:
    asked = proposal(1)
    followed: list[Proposal] = []

    async with learner_and_peer(tmp_path, Serving(asked.chain_id, asked.encode())) as (directory, learner, peer):

        async def follow(p: Proposal) -> None:
            followed.append(p)
            directory.chains.add_proposal(p)

        with trio.fail_after(30):
            await directory.ask(learner, peer.peer_id, follow)
        stats = {s.peer_id: s for s in learner.peers()}[peer.peer_id]
        rows = directory.summaries()
        # Served back: the learner now lists and serves what it learnt.
        assert directory.list_problems() == [ProblemListing(asked.chain_id, -1)]
        assert directory.get_proposal(asked.chain_id) == asked.encode()
    assert followed == [asked]
    assert stats.penalty == 0
    assert [(r["chain"], r["followed"], r["height"], r["holders"]) for r in rows] == [
        ("0x" + asked.chain_id.hex(), True, -1, [{"peer_id": peer.peer_id, "height": 7}])]


@pytest.mark.trio
async def test_an_unfollowed_problem_is_shown_but_not_followed(tmp_path: Path) -> None:
    asked = proposal(1)
    followed: list[Proposal] = []

    async def follow(p: Proposal) -> None:
        followed.append(p)

    async with learner_and_peer(tmp_path, Serving(asked.chain_id, asked.encode())) as (directory, learner, peer):
        directory.follows = lambda chain_id: False
        with trio.fail_after(30):
            await directory.ask(learner, peer.peer_id, follow)
        rows = directory.summaries()
    assert followed == []
    assert [(r["name"], r["followed"], r["holders"]) for r in rows] == [
        (asked.params.name, False, [{"peer_id": peer.peer_id, "height": 7}])]


class Lister(ProblemProvider):
    """A peer that lists ``n`` chain ids and serves no proposal for any (counts the asks)."""

    def __init__(self, n: int) -> None:
        self.ids = [bytes([i]) * 32 for i in range(n)]
        self.gets = 0

    def list_problems(self) -> list[ProblemListing]:
        return [ProblemListing(cid, 0) for cid in self.ids]

    def get_proposal(self, chain_id: bytes) -> bytes | None:
        self.gets += 1
        return None


@pytest.mark.trio
async def test_one_ask_fetches_at_most_its_cap_of_proposals(tmp_path: Path) -> None:
    """A peer listing many chains makes us fetch at most MAX_FETCHES_PER_ASK per ask; the rest
    wait for the next ask (every ASK_EVERY_S), so a lister cannot turn one list into 256 requests."""
    from daimon_node.daemon.problems import MAX_FETCHES_PER_ASK

    lister = Lister(3 * MAX_FETCHES_PER_ASK)

    async def follow(p: Proposal) -> None:
        raise AssertionError("nothing here is followable")

    async with learner_and_peer(tmp_path, lister) as (directory, learner, peer):
        with trio.fail_after(30):
            await directory.ask(learner, peer.peer_id, follow)
    assert lister.gets == MAX_FETCHES_PER_ASK
    assert directory.summaries() == []  # unverified claims are not shown


def test_holders_expire_and_a_delisting_peer_is_dropped(tmp_path: Path) -> None:
    """A holder is shown for HOLDER_TTL_S after its last list, then forgotten; a peer whose
    new list lacks the chain stops being a holder at once."""
    from daimon_node.daemon.problems import HOLDER_TTL_S

    chains = ChainManager(tmp_path, ContentStore(tmp_path / "content"), SystemClock())
    try:
        p = proposal(1)
        chains.add_proposal(p)
        directory = ProblemDirectory(chains, follows=lambda chain_id: True)
        # A chain we follow: nothing to fetch, the peer becomes a holder.
        assert directory.record("peer-a", [ProblemListing(p.chain_id, 3)], now=100.0) == []
        directory.record("peer-b", [ProblemListing(p.chain_id, 4)], now=100.0)
        assert directory.holders(p.chain_id, now=100.0) == {"peer-a": 3, "peer-b": 4}
        directory.record("peer-b", [], now=101.0)  # b no longer lists it
        assert directory.holders(p.chain_id, now=101.0) == {"peer-a": 3}
        late = 100.0 + HOLDER_TTL_S + 1
        assert directory.holders(p.chain_id, now=late) == {}
        directory.record("peer-c", [ProblemListing(p.chain_id, 5)], now=late)
        assert set(directory.known[p.chain_id].holders) == {"peer-c"}  # a's entry pruned, not only hidden
    finally:
        chains.close()
