"""What the RPC backend may ask of a running node (``NodeAPI``), and its implementation.

The backend reads chains and peers, submits through the node's one admission path, listens
to events and asks a runner for inference; it never reaches into the node's parts. The node
builds ``NodeServices`` from those parts and hands it to the backend, so the backend imports
neither the node nor the p2p layer.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from p2p import ContentStore, P2PNode, PeerStats, chain_topic

from daimon_node.daemon.admission import Admission, Admitter, MessageKind, NodeMetrics, Source
from daimon_node.daemon.chains import ChainHandle, ChainManager
from daimon_node.daemon.problems import ProblemDirectory
from daimon_node.rpc.api import Discovery, ProblemSummary

log = logging.getLogger(__name__)

Listener = Callable[[str, bytes, dict[str, Any]], None]
RequestHandler = Callable[[str, Any], Awaitable[Any]]  # (peer id, decoded request) -> reply


class NodeAPI(Protocol):
    """The node as the RPC backend sees it."""

    def now(self) -> float: ...

    def chain(self, chain_id: bytes) -> ChainHandle | None: ...

    def chain_list(self) -> list[ChainHandle]: ...

    def content(self) -> ContentStore: ...

    def problem_summaries(self) -> list[ProblemSummary]: ...

    def problems_forged(self) -> int: ...

    async def submit(self, handle: ChainHandle, kind: MessageKind, raw: bytes) -> Admission: ...

    def peer_id(self) -> str: ...

    def peers(self) -> list[PeerStats]: ...

    def peer_count(self) -> int: ...

    def bans_total(self) -> int: ...

    def discovery(self) -> Discovery: ...

    def gossip_peers(self, chain_id: bytes) -> int: ...

    def sync_status(self) -> dict[bytes, tuple[int, int]]: ...

    def counters(self) -> NodeMetrics: ...

    def uptime_s(self) -> float: ...

    def listen(self, listener: Listener) -> None: ...

    def every_second(self, fn: Callable[[], None]) -> None: ...

    async def runner_call(self, peer: str, request: Any) -> Any: ...


@dataclass
class EventBus:
    """Node events (new heads, txs, proofs, votes) to whoever listens; a listener's bug is logged."""

    listeners: list[Listener] = field(default_factory=list)

    def emit(self, event: str, chain_id: bytes, payload: dict[str, Any]) -> None:
        for fn in list(self.listeners):
            try:
                fn(event, chain_id, payload)
            except Exception:  # a listener's bug must not stop the node
                log.exception("event listener failed")


@dataclass
class NodeServices:
    """``NodeAPI`` over the node's parts."""

    chains: ChainManager
    store: ContentStore
    problems: ProblemDirectory
    p2p: P2PNode
    admitter: Admitter
    metrics: NodeMetrics
    events: EventBus
    periodic: list[Callable[[], None]]
    sync_targets: dict[bytes, tuple[int, int]]
    local_calls: dict[str, RequestHandler]  # stream protocol -> this node's own service, if it runs one
    started_at: float = field(default_factory=time.time)

    def now(self) -> float:
        return self.admitter.now()

    def chain(self, chain_id: bytes) -> ChainHandle | None:
        return self.chains.get(chain_id)

    def chain_list(self) -> list[ChainHandle]:
        return list(self.chains.chains.values())

    def content(self) -> ContentStore:
        return self.store

    def problem_summaries(self) -> list[ProblemSummary]:
        return self.problems.summaries()

    def problems_forged(self) -> int:
        return self.problems.forged

    async def submit(self, handle: ChainHandle, kind: MessageKind, raw: bytes) -> Admission:
        return await self.admitter.submit(handle, kind, raw, Source.RPC)

    def peer_id(self) -> str:
        return self.p2p.peer_id

    def peers(self) -> list[PeerStats]:
        return self.p2p.peers()

    def peer_count(self) -> int:
        return self.p2p.peer_count()

    def bans_total(self) -> int:
        return self.p2p.bans_total

    def gossip_peers(self, chain_id: bytes) -> int:
        return len(self.p2p.topic_peers(chain_topic(chain_id, "blocks")))

    def discovery(self) -> Discovery:
        service = self.p2p.discovery
        counts = service.counts
        return Discovery(dht=service.dht is not None, mdns=service.config.mdns,
                         routing_table=service.routing_table_size(), provided=counts.provided,
                         provider_lookups=counts.provider_lookups, dials=counts.dials,
                         dial_failures=counts.dial_failures, mdns_found=counts.mdns_found)

    def sync_status(self) -> dict[bytes, tuple[int, int]]:
        return dict(self.sync_targets)

    def counters(self) -> NodeMetrics:
        return self.metrics

    def uptime_s(self) -> float:
        return time.time() - self.started_at

    def listen(self, listener: Listener) -> None:
        self.events.listeners.append(listener)

    def every_second(self, fn: Callable[[], None]) -> None:
        self.periodic.append(fn)

    async def runner_call(self, peer: str, request: Any) -> Any:
        """One request to a model runner: this node's own service in process, else over request/response."""
        from daimon_node.market.wire import INFER_LIMITS, INFER_PROTOCOL, InferCodec

        local = self.local_calls.get(INFER_PROTOCOL)
        if local is not None and peer == self.p2p.peer_id:
            return await local(peer, request)
        return await self.p2p.request_response(INFER_PROTOCOL, InferCodec(), INFER_LIMITS).request(peer, request)
