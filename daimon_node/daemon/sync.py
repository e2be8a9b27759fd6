"""Catching a node's chains up from its peers.

Every ``SYNC_INTERVAL_S`` (or at once when the node wakes it: a block whose parent it
lacks, a chain just joined) each chain asks every connected peer for its head and, from a
heavier one, fetches blocks after its own height in batches of ``SYNC_BATCH``, stepping
back a batch at a time to find a fork point.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Final

import trio

from p2p import P2PError

from daimon_node.daemon.chains import ChainHandle, ImportVerdict

if TYPE_CHECKING:
    from daimon_node.daemon.node import Node

log = logging.getLogger(__name__)

SYNC_INTERVAL_S: Final[float] = 2.0
SYNC_BATCH: Final[int] = 64
SYNC_REQUEST_TIMEOUT_S: Final[float] = 20.0


class ChainSync:
    """The node's sync loop; ``run`` it in the node's nursery."""

    def __init__(self, node: "Node") -> None:
        self.node = node

    async def run(self) -> None:
        while True:
            with trio.move_on_after(SYNC_INTERVAL_S):
                await self.node._sync_wakeup.wait()
            self.node._sync_wakeup = trio.Event()
            for handle in list(self.node.chains.chains.values()):
                try:
                    await self.sync_chain(handle)
                except (P2PError, trio.TooSlowError) as exc:
                    log.debug("sync of %s: %s", handle.chain_id.hex()[:12], exc)

    async def sync_chain(self, handle: ChainHandle) -> None:
        """Catch up from every peer that is ahead; one failing peer does not stop the others."""
        for stats in self.node.p2p.peers():
            if not stats.connected:
                continue
            try:
                await self.sync_from(handle, stats.peer_id)
            except (P2PError, trio.TooSlowError) as exc:
                log.debug("sync of %s from %s: %s", handle.chain_id.hex()[:12], stats.peer_id[:12], exc)
        self.node.sync_targets.pop(handle.chain_id, None)

    async def sync_from(self, handle: ChainHandle, peer: str) -> None:
        """Blocks after our height from ``peer``, stepping back a batch at a time on a fork."""
        ours = handle.store.tip() if handle.started else None
        with trio.fail_after(SYNC_REQUEST_TIMEOUT_S):
            head = await self.node.p2p.request_head(peer, handle.chain_id)
        if head is None or (ours is not None and head.weight <= ours.weight):
            return
        # Heavier need not mean taller (two halves of a partition seal as many blocks, the
        # heavier more of them in turn): ask at least for the peer's head, whose parent
        # then tells whether to step back to the fork.
        start = min(ours.height + 1, head.height) if ours is not None else 0
        self.node.sync_targets[handle.chain_id] = (start - 1, head.height)
        for _ in range(64):  # bounded: at most 64 batches per round
            with trio.fail_after(SYNC_REQUEST_TIMEOUT_S):
                blocks = await self.node.p2p.request_blocks(peer, handle.chain_id, start, SYNC_BATCH)
            if not blocks:
                break
            stepped_back = False
            for raw in blocks:
                report = self.node.chains.import_block(handle, raw)
                if report.verdict is ImportVerdict.EQUIVOCATION:
                    self.node._report_equivocation(handle, report)
                    if report.result is None:  # a third block for one period: refused
                        return
                if report.result is not None and report.verdict in (ImportVerdict.ACCEPTED,
                                                                     ImportVerdict.EQUIVOCATION):
                    self.node._on_imported(handle, report)
                elif report.verdict is ImportVerdict.NEEDS_PARENT:
                    if start == 0:
                        return
                    start = max(0, start - SYNC_BATCH)  # a fork: fetch from further back
                    stepped_back = True
                    break
                elif report.verdict is ImportVerdict.NEEDS_CONTENT and report.missing is not None:
                    await self.node._fetch_one(report.missing, 1 << 30)
                    return
                elif report.verdict in (ImportVerdict.INVALID, ImportVerdict.FUTURE):
                    return
            if not stepped_back:
                start += len(blocks)
                if len(blocks) < SYNC_BATCH:
                    break
        await self.node.p2p.rejudge()
