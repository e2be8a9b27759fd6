"""The problems the network knows, so that a problem outlives its creator.

Only a problem's creator announces it on ``/daimon/problems``; a node that starts after
the creator left would never hear of it. Every node therefore serves the problems it
follows over ``/daimon/problems/1`` (``ProblemProvider``), and asks each connected peer
for its list now and then (``ProblemDirectory.run``). A chain id a peer lists is a claim:
its proposal is fetched from that peer and followed only if it is a signed proposal whose
hash is the chain id (``verify_fetched_proposal``); anything else costs the peer the
penalty for bytes that are not what their id says. Once followed, the usual sync and
content fetching take over, from whichever peers hold the chain.

The directory also remembers, per chain, which peers said they hold it and at what
height (``daimon_listProblems``, ``daimon-node problem list --network``).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Final

import trio

from chain.errors import ChainError
from chain.types import Proposal
from p2p import P2PError, P2PNode, ProblemListing, ProblemProvider

from daimon_node.daemon.chains import ChainManager, decode_proposal
from daimon_node.errors import DaimonError
from daimon_node.rpc.api import HolderInfo, ProblemSummary, hex0x

log = logging.getLogger(__name__)

# A new peer is asked within one tick of connecting; every peer again every ASK_EVERY_S
# (a list is ~45 bytes a problem, so asking is cheap); after a failed ask (a connection
# still being set up, a busy peer) sooner: RETRY_S, doubling per failure up to ASK_EVERY_S.
# A holder not heard from in three asks is no longer shown.
TICK_S: Final[float] = 1.0
ASK_EVERY_S: Final[float] = 10.0
RETRY_S: Final[float] = 2.0
HOLDER_TTL_S: Final[float] = 3 * ASK_EVERY_S
REQUEST_TIMEOUT_S: Final[float] = 20.0  # above p2p's own 15 s request deadline
# Bounds on what peers can make us do or hold: proposals fetched per peer per ask (the
# rest on the next ask), peers asked at once, problems remembered that we do not follow.
MAX_FETCHES_PER_ASK: Final[int] = 8
MAX_CONCURRENT_ASKS: Final[int] = 4
MAX_UNFOLLOWED: Final[int] = 1024
MAX_HOLDERS_SHOWN: Final[int] = 64


class ForgedProposal(DaimonError):
    """A peer served, for a chain id, bytes that are not a signed proposal hashing to it."""

    def __init__(self, chain_id: bytes, got: bytes | None, detail: str) -> None:
        self.chain_id = chain_id
        self.got = got  # the served proposal's own chain id, when it decoded
        self.detail = detail
        super().__init__(f"proposal served for chain {chain_id.hex()[:16]} is forged: {detail}")


def verify_fetched_proposal(chain_id: bytes, data: bytes) -> Proposal:
    """The proposal in ``data`` if it is canonical, signed by its creator and hashes to
    ``chain_id`` (the chain id *is* that hash, so nothing else can stand for the chain)."""
    try:
        proposal = decode_proposal(data)
    except ChainError as exc:
        raise ForgedProposal(chain_id, None, str(exc)) from exc
    if proposal.chain_id != chain_id:
        raise ForgedProposal(chain_id, proposal.chain_id, f"it hashes to {proposal.chain_id.hex()[:16]}")
    return proposal


@dataclass
class Holder:
    height: int
    told_at: float  # time.monotonic() of the list that said so


@dataclass
class KnownProblem:
    """A chain whose proposal we verified, and the peers that say they hold it."""

    name: str
    holders: dict[str, Holder] = field(default_factory=dict)


class ProblemDirectory(ProblemProvider):
    """Serves our problems and learns the network's (see the module docstring)."""

    def __init__(self, chains: ChainManager, follows: Callable[[bytes], bool]) -> None:
        self.chains = chains
        self.follows = follows
        self.known: dict[bytes, KnownProblem] = {}
        self.asked_at: dict[str, float] = {}
        self.failures: dict[str, int] = {}  # failed asks in a row, per peer
        self.forged = 0  # proposals refused since start (metrics, tests)

    # --- ProblemProvider ------------------------------------------------------------------
    def list_problems(self) -> list[ProblemListing]:
        return [ProblemListing(h.chain_id, h.store.height) for h in self.chains.chains.values()]

    def get_proposal(self, chain_id: bytes) -> bytes | None:
        handle = self.chains.get(chain_id)
        return None if handle is None else handle.proposal.encode()

    # --- what peers told us -----------------------------------------------------------------
    def record(self, peer: str, listings: list[ProblemListing], now: float) -> list[bytes]:
        """Note what ``peer`` holds; returns the chain ids it listed whose proposal we lack."""
        listed = {item.chain_id: item.height for item in listings}
        for chain_id, known in self.known.items():
            if chain_id not in listed:
                known.holders.pop(peer, None)
            for stale in [p for p, h in known.holders.items() if now - h.told_at > HOLDER_TTL_S]:
                del known.holders[stale]  # a peer that left is forgotten, not only hidden
        unknown: list[bytes] = []
        for chain_id, height in listed.items():
            known = self._known(chain_id)
            if known is None:
                unknown.append(chain_id)
            else:
                known.holders[peer] = Holder(height, now)
        return unknown

    def _known(self, chain_id: bytes) -> KnownProblem | None:
        """The entry of a chain we follow or verified (created for a followed one)."""
        known = self.known.get(chain_id)
        if known is None:
            handle = self.chains.get(chain_id)
            if handle is not None:
                known = self.known[chain_id] = KnownProblem(handle.proposal.params.name)
        return known

    def learn(self, proposal: Proposal) -> bool:
        """Remember a verified proposal we do not follow; False once the directory is full."""
        if proposal.chain_id in self.known:
            return True
        unfollowed = sum(1 for cid in self.known if self.chains.get(cid) is None)
        if unfollowed >= MAX_UNFOLLOWED:
            return False
        self.known[proposal.chain_id] = KnownProblem(proposal.params.name)
        return True

    def holders(self, chain_id: bytes, now: float | None = None) -> dict[str, int]:
        """Peers that listed ``chain_id`` within ``HOLDER_TTL_S``, with their heights."""
        now = time.monotonic() if now is None else now
        known = self.known.get(chain_id)
        if known is None:
            return {}
        return {peer: h.height for peer, h in known.holders.items() if now - h.told_at <= HOLDER_TTL_S}

    # --- asking peers ---------------------------------------------------------------------
    async def run(self, net: P2PNode, follow: Callable[[Proposal], Awaitable[None]]) -> None:
        """Ask every connected peer for its problems, each at most every ``ASK_EVERY_S``."""
        limiter = trio.CapacityLimiter(MAX_CONCURRENT_ASKS)
        async with trio.open_nursery() as nursery:
            while True:
                now = time.monotonic()
                connected = net.connected_peers()
                for gone in [p for p, at in self.asked_at.items() if p not in connected and now - at >= ASK_EVERY_S]:
                    del self.asked_at[gone]  # asked again as soon as it reconnects
                    self.failures.pop(gone, None)
                for peer in connected:
                    if now - self.asked_at.get(peer, -math.inf) >= ASK_EVERY_S:
                        self.asked_at[peer] = now
                        nursery.start_soon(self._ask_limited, limiter, net, peer, follow)
                await trio.sleep(TICK_S)

    async def _ask_limited(self, limiter: trio.CapacityLimiter, net: P2PNode, peer: str,
                           follow: Callable[[Proposal], Awaitable[None]]) -> None:
        async with limiter:
            await self.ask(net, peer, follow)

    async def ask(self, net: P2PNode, peer: str, follow: Callable[[Proposal], Awaitable[None]]) -> None:
        """One round with one peer: its list, then the proposals we lack (bounded)."""
        try:
            with trio.fail_after(REQUEST_TIMEOUT_S):
                listings = await net.request_problem_list(peer)
        except (P2PError, trio.TooSlowError) as exc:
            fails = self.failures[peer] = self.failures.get(peer, 0) + 1
            log.log(logging.INFO if fails == 1 else logging.DEBUG, "no problem list from %s: %s", peer[:12], exc)
            self.asked_at[peer] = time.monotonic() - ASK_EVERY_S + min(ASK_EVERY_S, RETRY_S * 2 ** (fails - 1))
            return
        self.failures.pop(peer, None)
        unknown = self.record(peer, listings, time.monotonic())
        heights = {item.chain_id: item.height for item in listings}
        for chain_id in unknown[:MAX_FETCHES_PER_ASK]:
            try:
                proposal = await self._fetch(net, peer, chain_id)
            except ForgedProposal:
                return  # penalised (banned at the default threshold): ask it nothing more
            if proposal is None:
                continue
            if self.follows(chain_id):
                log.info("following problem %s (%s), learnt from %s", proposal.params.name,
                         chain_id.hex()[:16], peer[:12])
                await follow(proposal)
            elif not self.learn(proposal):
                continue
            known = self._known(chain_id)
            if known is not None:
                known.holders[peer] = Holder(heights[chain_id], time.monotonic())

    async def _fetch(self, net: P2PNode, peer: str, chain_id: bytes) -> Proposal | None:
        try:
            with trio.fail_after(REQUEST_TIMEOUT_S):
                data = await net.request_proposal(peer, chain_id)
        except (P2PError, trio.TooSlowError) as exc:
            log.debug("proposal %s from %s: %s", chain_id.hex()[:16], peer[:12], exc)
            return None
        if data is None:
            log.info("%s listed chain %s but serves no proposal for it", peer[:12], chain_id.hex()[:16])
            return None
        try:
            return verify_fetched_proposal(chain_id, data)
        except ForgedProposal as exc:
            self.forged += 1
            log.warning("refusing a proposal from %s: %s", peer[:12], exc)
            net.penalise_bad_data(peer)
            raise

    # --- what the RPC shows ---------------------------------------------------------------
    def summaries(self) -> list[ProblemSummary]:
        """Every problem we follow (our height and head), then every verified one we do not
        (height -1), each with the peers that hold it and their heights."""
        now = time.monotonic()
        rows = [ProblemSummary(chain=hex0x(h.chain_id), name=h.proposal.params.name, height=h.store.height,
                               head=hex0x(h.store.head), followed=True, holders=self._holder_rows(h.chain_id, now))
                for h in self.chains.chains.values()]
        rows += [ProblemSummary(chain=hex0x(chain_id), name=known.name, height=-1, head=hex0x(bytes(32)),
                                followed=False, holders=self._holder_rows(chain_id, now))
                 for chain_id, known in self.known.items() if self.chains.get(chain_id) is None]
        return rows

    def _holder_rows(self, chain_id: bytes, now: float) -> list[HolderInfo]:
        held = sorted(self.holders(chain_id, now).items(), key=lambda kv: (-kv[1], kv[0]))
        return [HolderInfo(peer_id=peer, height=height) for peer, height in held[:MAX_HOLDERS_SHOWN]]
