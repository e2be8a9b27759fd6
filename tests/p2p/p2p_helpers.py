"""Factories for p2p tests: nodes on 127.0.0.1 (port 0, so the OS picks a free one)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio

from p2p import DiscoveryConfig, GossipMessage, P2PConfig, P2PNode, SyncProvider

CHAIN_ID = bytes(range(32))
# These tests build exact topologies (a line, a judge between two peers); the DHT would add
# links of its own, so it is off unless a test asks for it (test_p2p_discovery.py does).
NO_DHT = DiscoveryConfig(dht=False)


def seed(i: int) -> bytes:
    return bytes([i + 1]) * 32


async def wait_until(pred: Callable[[], bool], poll_s: float = 0.02) -> None:
    """Poll ``pred``; callers bound it with ``trio.fail_after``."""
    while not pred():
        await trio.sleep(poll_s)


class Inbox:
    """Collects delivered messages and lets a test wait for a count."""

    def __init__(self) -> None:
        self.messages: list[GossipMessage] = []

    def __call__(self, msg: GossipMessage) -> None:
        self.messages.append(msg)

    @property
    def data(self) -> list[bytes]:
        return [m.data for m in self.messages]

    async def wait_for(self, n: int) -> None:
        await wait_until(lambda: len(self.messages) >= n)


@asynccontextmanager
async def running_nodes(
    tmp_path: Path, n: int, providers: list[SyncProvider | None] | None = None, **cfg: Any
) -> AsyncIterator[list[P2PNode]]:
    """Start ``n`` nodes in this process (without the DHT unless ``discovery`` says); cancel them all on exit."""
    cfg.setdefault("discovery", NO_DHT)
    nodes = [
        P2PNode(
            P2PConfig(seed=seed(i), content_dir=tmp_path / f"node{i}", **cfg),
            sync_provider=providers[i] if providers else None,
        )
        for i in range(n)
    ]
    async with trio.open_nursery() as nursery:
        with trio.fail_after(15):
            for node in nodes:
                await nursery.start(node.run)
        yield nodes
        nursery.cancel_scope.cancel()


async def link(a: P2PNode, b: P2PNode) -> None:
    """Connect ``a`` to ``b`` (bounded)."""
    with trio.fail_after(15):
        await a.connect(b.listen_addrs()[0])


