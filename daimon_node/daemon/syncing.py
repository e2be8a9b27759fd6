"""Catching up from peers, and fetching the content a chain needs.

``ChainSync`` asks every connected peer for its head and pulls the blocks after ours (stepping
back a batch at a time on a fork) through the node's one block importer. ``ContentFetcher``
fetches content by id with bounded retries: a chain's inputs and DEL when it is joined, a new
season's holdout once a block makes it necessary, a missing piece a block waits for.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import trio

from chain.header import BlockHeader
from p2p import ContentStore, P2PError, P2PNode

from daimon_node.daemon.chains import ChainHandle, ChainManager, ImportReport, ImportVerdict, data_dir_writes
from daimon_node.daemon.importer import BlockImporter

log = logging.getLogger(__name__)

SYNC_INTERVAL_S = 2.0
SYNC_BATCH = 64
SYNC_MAX_BATCHES = 64  # per peer and round: a long catch-up continues next round
SYNC_REQUEST_TIMEOUT_S = 20.0
FETCH_TIMEOUT_S = 60.0
FETCH_ATTEMPTS = 30
FETCH_MAX_BACKOFF_S = 10.0
ANY_SIZE = 1 << 30  # the content a chain names was size-checked when the chain accepted it

Imported = Callable[[ChainHandle, ImportReport], None]
Equivocation = Callable[[ChainHandle, tuple[BlockHeader, BlockHeader] | None], None]


class ContentFetcher:
    """Content by id from peers, retried with back-off; one background fetch per id at a time."""

    def __init__(self, content: ContentStore, p2p: P2PNode, chains: ChainManager) -> None:
        self.content = content
        self.p2p = p2p
        self.chains = chains
        self._fetching: set[bytes] = set()
        self.nursery: trio.Nursery | None = None  # set once the node runs

    async def fetch(self, content_id: bytes, max_bytes: int) -> bytes:
        """Content for a role: fetched once if missing, within one request's timeout."""
        if not self.content.has(content_id):
            with trio.fail_after(FETCH_TIMEOUT_S), data_dir_writes():
                await self.p2p.fetch_content(content_id, max_bytes)
        return self.content.get(content_id, max_bytes)

    async def fetch_one(self, cid: bytes, max_bytes: int = ANY_SIZE) -> None:
        for attempt in range(FETCH_ATTEMPTS):
            if self.content.has(cid):
                return
            try:
                with trio.fail_after(FETCH_TIMEOUT_S), data_dir_writes():
                    await self.p2p.fetch_content(cid, max_bytes)
                await self.p2p.rejudge()  # gossip that waited for it
                return
            except (P2PError, trio.TooSlowError) as exc:
                log.debug("content %s not fetched yet (%s)", cid.hex()[:12], exc)
                await trio.sleep(min(FETCH_MAX_BACKOFF_S, 0.5 * (attempt + 1)))

    async def fetch_needed(self, handle: ChainHandle) -> None:
        for cid in self.chains.needed_content(handle):
            await self.fetch_one(cid)
        self.chains.pin_needed(handle)

    def fetch_new_content(self, handle: ChainHandle) -> None:
        """Content a block made necessary (a new season's Z_h): fetch it in the background."""
        if self.nursery is None:
            return
        for cid in self.chains.needed_content(handle):
            if cid not in self._fetching and not self.content.has(cid):
                self._fetching.add(cid)
                self.nursery.start_soon(self._fetch_and_pin, handle, cid)

    async def _fetch_and_pin(self, handle: ChainHandle, cid: bytes) -> None:
        try:
            await self.fetch_one(cid)
            self.chains.pin_needed(handle)
        finally:
            self._fetching.discard(cid)


class ChainSync:
    """The sync loop: wakes every ``SYNC_INTERVAL_S`` or when gossip met an unknown parent."""

    def __init__(self, chains: ChainManager, p2p: P2PNode, importer: BlockImporter, fetcher: ContentFetcher,
                 imported: Imported, equivocation: Equivocation) -> None:
        self.chains = chains
        self.p2p = p2p
        self.importer = importer
        self.fetcher = fetcher
        self.imported = imported
        self.equivocation = equivocation
        self.targets: dict[bytes, tuple[int, int]] = {}  # chain -> (our height, peer's), while behind
        self._wakeup = trio.Event()

    def wake(self) -> None:
        self._wakeup.set()

    async def run(self) -> None:
        while True:
            with trio.move_on_after(SYNC_INTERVAL_S):
                await self._wakeup.wait()
            self._wakeup = trio.Event()
            for handle in list(self.chains.chains.values()):
                try:
                    await self.sync_chain(handle)
                except (P2PError, trio.TooSlowError) as exc:
                    log.debug("sync of %s: %s", handle.chain_id.hex()[:12], exc)

    async def sync_chain(self, handle: ChainHandle) -> None:
        """Catch up from every peer that is ahead; one failing peer does not stop the others."""
        for stats in self.p2p.peers():
            if not stats.connected:
                continue
            try:
                await self.sync_from(handle, stats.peer_id)
            except (P2PError, trio.TooSlowError) as exc:
                log.debug("sync of %s from %s: %s", handle.chain_id.hex()[:12], stats.peer_id[:12], exc)
        self.targets.pop(handle.chain_id, None)

    async def sync_from(self, handle: ChainHandle, peer: str) -> None:
        """Blocks after our height from ``peer``, stepping back a batch at a time on a fork."""
        ours = handle.store.tip() if handle.started else None
        with trio.fail_after(SYNC_REQUEST_TIMEOUT_S):
            head = await self.p2p.request_head(peer, handle.chain_id)
        if head is None or (ours is not None and head.weight <= ours.weight):
            return
        # Heavier need not mean taller (two halves of a partition seal as many blocks, the
        # heavier more of them in turn): ask at least for the peer's head, whose parent
        # then tells whether to step back to the fork.
        start = min(ours.height + 1, head.height) if ours is not None else 0
        self.targets[handle.chain_id] = (start - 1, head.height)
        for _ in range(SYNC_MAX_BATCHES):
            with trio.fail_after(SYNC_REQUEST_TIMEOUT_S):
                blocks = await self.p2p.request_blocks(peer, handle.chain_id, start, SYNC_BATCH)
            if not blocks:
                break
            next_start = await self._import_batch(handle, blocks, start)
            if next_start is None:
                return
            if next_start == start + len(blocks) and len(blocks) < SYNC_BATCH:
                break
            start = next_start
        await self.p2p.rejudge()

    async def _import_batch(self, handle: ChainHandle, blocks: list[bytes], start: int) -> int | None:
        """Import one batch; the next start height, or None to stop syncing from this peer."""
        for raw in blocks:
            report = await self.importer.import_now(handle, raw)
            v = report.verdict
            if v is ImportVerdict.EQUIVOCATION:
                self.equivocation(handle, report.evidence)
                if report.result is None:  # a third block for one period: refused
                    return None
            if report.result is not None and v in (ImportVerdict.ACCEPTED, ImportVerdict.EQUIVOCATION):
                self.imported(handle, report)
            elif v is ImportVerdict.NEEDS_PARENT:
                return None if start == 0 else max(0, start - SYNC_BATCH)  # a fork: from further back
            elif v is ImportVerdict.NEEDS_CONTENT and report.missing is not None:
                await self.fetcher.fetch_one(report.missing)
                return None
            elif v in (ImportVerdict.INVALID, ImportVerdict.FUTURE):
                return None
        return start + len(blocks)
