"""Interfaces between the node and the p2p package.

The node (``daimon_node``) sees only these types and ``P2PNode``; libp2p stays behind
them, so a libp2p upgrade or swap touches ``p2p/`` alone.
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path


class ValidationResult(enum.Enum):
    """A topic validator's verdict on one gossip message.

    - ``ACCEPT``: deliver to the node's handler and forward to the mesh.
    - ``REJECT``: invalid by the rules; dropped, cached as invalid for its message
      id, and counted against the peer that forwarded it (ban past a threshold).
    - ``IGNORE``: not worth relaying (duplicate vote, stale period...); dropped
      without penalty and *not* cached, so a later copy is judged afresh.
    - ``DEFER``: cannot be judged yet (e.g. a block whose parent is missing);
      not forwarded now, held in a bounded pending pool and judged again when
      the node calls ``P2PNode.rejudge`` (after it synced what was missing).
    """

    ACCEPT = "accept"
    REJECT = "reject"
    IGNORE = "ignore"
    DEFER = "defer"


@dataclass(frozen=True, slots=True)
class GossipMessage:
    """One validated gossip message handed to the node.

    ``source`` is the peer that signed (authored) it; ``msg_id`` is SHA-256 of ``data``.
    """

    topic: str
    data: bytes
    msg_id: bytes
    source: str


# (forwarding peer id, payload) -> verdict; may be a plain or an async function.
Validator = Callable[[str, bytes], "ValidationResult | Awaitable[ValidationResult]"]
# Called once per accepted message, in arrival order per topic.
Handler = Callable[[GossipMessage], "Awaitable[None] | None"]


@dataclass(frozen=True, slots=True)
class SyncHead:
    """What a peer says its head of one chain is."""

    height: int
    block_hash: bytes
    weight: int


@dataclass(frozen=True, slots=True)
class PeerStats:
    """Per-peer counters exposed to the node (RPC ``daimon_peers``, metrics)."""

    peer_id: str
    connected: bool
    addrs: tuple[str, ...]
    accepted: int
    rejected: int
    ignored: int
    deferred: int
    penalty: float
    banned_for_s: float
    sync_requests_served: int
    content_bytes_sent: int
    content_bytes_received: int
    last_seen_s_ago: float | None


class SyncProvider(ABC):
    """The node's view of its chains, used to *serve* ``/daimon/sync/1``.

    Methods may be sync or async. They return already-encoded blocks/headers; the
    p2p layer never decodes them.
    """

    @abstractmethod
    def get_head(self, chain_id: bytes) -> "SyncHead | None | Awaitable[SyncHead | None]":
        """Our head of ``chain_id``, or None if we do not follow that chain."""

    @abstractmethod
    def get_blocks(
        self, chain_id: bytes, start_height: int, count: int
    ) -> "list[bytes] | Awaitable[list[bytes]]":
        """Encoded blocks ``start_height .. start_height+count-1`` we have, in order (may be fewer)."""

    @abstractmethod
    def get_headers(
        self, chain_id: bytes, start_height: int, count: int
    ) -> "list[bytes] | Awaitable[list[bytes]]":
        """Encoded headers for the same range (may be fewer)."""


@dataclass(frozen=True, slots=True)
class ProblemListing:
    """One problem a peer says it follows (``/daimon/problems/1`` list): its chain id and
    the peer's head height, -1 before the Problem block. A claim, not a proof: the
    proposal fetched for it must hash to ``chain_id``."""

    chain_id: bytes
    height: int


class ProblemProvider(ABC):
    """The node's problems, used to *serve* ``/daimon/problems/1`` so that a node that
    joins after a problem's creator left can still learn of it. Methods may be sync or
    async; the p2p layer never decodes a proposal."""

    @abstractmethod
    def list_problems(self) -> "list[ProblemListing] | Awaitable[list[ProblemListing]]":
        """Every problem we follow, with our height of it."""

    @abstractmethod
    def get_proposal(self, chain_id: bytes) -> "bytes | None | Awaitable[bytes | None]":
        """The encoded signed proposal of ``chain_id``, or None if we do not follow it."""


class INetwork(ABC):
    """What the node may ask of the network. ``P2PNode`` implements it."""

    @property
    @abstractmethod
    def peer_id(self) -> str:
        """Our own peer id (base58)."""

    @abstractmethod
    async def run(self, *, task_status: object = ...) -> None:
        """Run until cancelled; with ``nursery.start`` returns once listening."""

    @abstractmethod
    def listen_addrs(self) -> list[str]:
        """Our multiaddrs including ``/p2p/<id>``, to hand to other nodes."""

    @abstractmethod
    async def subscribe(
        self, topic: str, handler: Handler, validator: Validator | None = None,
        max_size: int | None = None,
    ) -> None:
        """Join ``topic``; ``validator`` judges every message before ``handler`` or relaying."""

    @abstractmethod
    async def publish(self, topic: str, data: bytes) -> bytes:
        """Sign and publish ``data``; returns its message id. Does not call our own validator."""

    @abstractmethod
    async def rejudge(self, topic: str | None = None) -> int:
        """Re-run validators over deferred messages; returns how many were accepted."""

    @abstractmethod
    async def request_head(self, peer: str, chain_id: bytes) -> SyncHead | None:
        """Ask ``peer`` for its head of ``chain_id``."""

    @abstractmethod
    async def request_blocks(self, peer: str | None, chain_id: bytes, start: int, count: int) -> list[bytes]:
        """Fetch up to ``count`` encoded blocks from ``start`` (any peer if ``peer`` is None)."""

    @abstractmethod
    async def request_headers(self, peer: str | None, chain_id: bytes, start: int, count: int) -> list[bytes]:
        """Fetch up to ``count`` encoded headers from ``start``."""

    @abstractmethod
    async def fetch_content(
        self, content_id: bytes, max_bytes: int, peers: Sequence[str] | None = None
    ) -> Path:
        """Get content into the local store (from peers if needed); returns its path."""

    @abstractmethod
    def peers(self) -> list[PeerStats]:
        """Stats of every peer we know of."""

    @abstractmethod
    def peer_count(self) -> int:
        """Number of currently connected peers."""
