"""Blocks are judged header-first in gossip and imported by one worker, off the event loop.

A gossip validator runs on the event loop under the gossip layer's timeout, which cannot
interrupt synchronous work: importing a full block there (decoding its body, checking every
transaction's signature, executing it) held up every other message's validation for as long.
The blocks topic's validator therefore checks only what ``chain.store`` checks before a body
is decoded (``check_wire_header``: signature, committer rule, parent, timestamp, and that the
header commits to these body bytes), and hands the block to a bounded queue. One worker
imports queued blocks on a thread, one at a time; the pool and the node's reactions (events,
content fetches, equivocation reports) follow on the event loop. A full queue drops the block
(``IGNORE``, counted as ``block/queue_full``): the sync loop fetches it from peers later.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Awaitable, Callable

import trio

from chain.errors import ChainError, CommitterEquivocation, DecodeError, FutureBlock, MissingContent, UnknownParent
from p2p import ValidationResult

from daimon_node.daemon.admission import NodeMetrics
from daimon_node.daemon.chains import ChainHandle, ChainManager, ImportReport, ImportVerdict
from daimon_node.errors import StorageFailure

log = logging.getLogger(__name__)

# Blocks waiting for import. A chain seals one in-turn block a period (plus out-of-turn ones
# after the grace), so honest gossip leaves a handful queued per followed chain; 64 covers
# that for every chain a node follows in practice, and a flood beyond it is dropped.
IMPORT_QUEUE_CAP = 64

Signer = tuple[bytes, int]  # (committer, period)
Reaction = Callable[[ChainHandle, ImportReport, bytes], Awaitable[None]]
HeaderHeld = Callable[[ChainHandle, ChainError], None]


class BlockImporter:
    """The gossip validator of the blocks topics and the one worker that imports blocks."""

    def __init__(self, chains: ChainManager, metrics: NodeMetrics, react: Reaction,
                 on_header_held: HeaderHeld, cap: int = IMPORT_QUEUE_CAP) -> None:
        self.chains = chains
        self.metrics = metrics
        self.react = react  # the node's reaction to every gossiped block's import
        self.on_header_held = on_header_held  # deferred or equivocating header: sync, fetch, report
        self._lock = trio.Lock()  # one import at a time: the store has one writer
        self._send, self._receive = trio.open_memory_channel[tuple[ChainHandle, bytes, Signer]](cap)
        self._queued_signers: Counter[Signer] = Counter()  # a queued block's signer is not yet in the store
        self.dropped = 0

    def check(self, handle: ChainHandle, data: bytes) -> ValidationResult:
        """Gossip verdict from the header alone; an accepted block is queued for import.

        A committer's second block for one period (stored or still queued) is queued (its
        import keeps the evidence) but not relayed, as consensus-specs IGNOREs it.
        """
        try:
            header = self.chains.check_header(handle, data)
        except (FutureBlock, UnknownParent, MissingContent) as exc:
            self.on_header_held(handle, exc)
            return ValidationResult.DEFER
        except CommitterEquivocation as exc:  # a third block: its evidence is reported, the block dropped
            self.on_header_held(handle, exc)
            return ValidationResult.IGNORE
        except (DecodeError, ChainError) as exc:
            handle.count("blocks_invalid")
            self.metrics.count("block", ImportVerdict.INVALID.value)
            log.info("invalid block header on %s: %s", handle.chain_id.hex()[:12], exc)
            return ValidationResult.REJECT
        if header is None:
            return ValidationResult.IGNORE  # known
        signer = (header.committer, header.period)
        second = handle.store.has_signed(*signer) or self._queued_signers[signer] > 0
        try:
            self._send.send_nowait((handle, data, signer))
        except trio.WouldBlock:
            self.dropped += 1
            self.metrics.count("block", "queue_full")
            return ValidationResult.IGNORE
        self._queued_signers[signer] += 1
        return ValidationResult.IGNORE if second else ValidationResult.ACCEPT

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Import queued blocks until cancelled; a storage failure leaves (and stops the node)."""
        task_status.started()
        async for handle, data, signer in self._receive:
            try:
                report = await self.import_now(handle, data)
            except StorageFailure:
                raise
            except Exception:  # a bug met on a peer's block must not stop the node
                log.exception("import of a gossiped block on %s failed", handle.chain_id.hex()[:12])
                continue
            finally:
                self._queued_signers[signer] -= 1
                if self._queued_signers[signer] <= 0:
                    del self._queued_signers[signer]
            self.metrics.count("block", report.verdict.value)
            await self.react(handle, report, data)

    async def import_now(self, handle: ChainHandle, data: bytes) -> ImportReport:
        """Import one block on a worker thread (queued, synced or our own), then settle the pool."""
        async with self._lock:
            report = await trio.to_thread.run_sync(self.chains.store_import, handle, data)
        return self.chains.settle(handle, report)

    def queued(self) -> int:
        return self._send.statistics().current_buffer_used
