"""The problem chains a node follows: one store, pool and content view per chain.

A chain is known from its signed proposal (persisted under ``proposals/`` so a
restart before the Problem block still knows it) and lives in
``chains/<chain id hex>/`` as a LevelDB store. Importing classifies every
outcome the network needs to act on: accepted, invalid (penalise), deferred (a
missing parent to sync, content to fetch, a timestamp ahead of our clock), or an
equivocation (dropped, its evidence kept for a ``ReportEquivocation``). Only a
block whose header passed the header-first checks (signature, committer rule) can
be deferred or accepted: every outcome is told apart by the error's type.
A write the data directory refuses is none of these: it raises ``StorageFailure``
(``DiskFull`` when the disk is full), which stops the node.
"""

from __future__ import annotations

import enum
import errno
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from chain.errors import (
    ChainError,
    CommitterEquivocation,
    DecodeError,
    FutureBlock,
    InvalidBlock,
    MissingContent,
    UnknownParent,
)
from chain.signing import is_valid_signature
from chain.state import State, get_meta, get_problem
from chain.store import ChainStore, ImportResult, StoreFull, StoreWriteError
from chain.outcome import Env
from chain.header import BlockHeader
from chain.types import ImprovementBody, Proposal, split_block
from chain.constants import ZERO_HASH
from p2p import ContentStore, ContentStoreFull, SyncHead, SyncProvider

from daimon_node.clock import Clock
from daimon_node.errors import DiskFull, StorageFailure
from daimon_node.daemon.mempool import Mempool, Verdict

log = logging.getLogger(__name__)


_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


@contextmanager
def data_dir_writes() -> Iterator[None]:
    """Writes to the data directory: any the disk refuses leave as one ``StorageFailure``.

    The chain store and the content store each type their own failures; a plain file
    write (a proposal, the port files) comes as an ``OSError`` with its errno.
    """
    try:
        yield
    except StoreFull as exc:
        raise DiskFull(exc.path, exc.detail) from exc
    except StoreWriteError as exc:
        raise StorageFailure(exc.path, exc.detail) from exc
    except ContentStoreFull as exc:
        raise DiskFull(exc.root, exc.detail) from exc
    except OSError as exc:
        if exc.errno in _FULL_ERRNOS:
            where = Path(exc.filename).parent if exc.filename else "the data directory"
            raise DiskFull(where, os.strerror(exc.errno)) from exc
        raise


class ImportVerdict(enum.Enum):
    ACCEPTED = "accepted"  # new head or stored side block
    KNOWN = "known"
    INVALID = "invalid"
    NEEDS_PARENT = "needs_parent"
    NEEDS_CONTENT = "needs_content"
    FUTURE = "future"
    EQUIVOCATION = "equivocation"  # a committer's second block for one period: drop, report


@dataclass
class ImportReport:
    verdict: ImportVerdict
    result: ImportResult | None = None
    error: str = ""
    missing: bytes | None = None  # content id, when NEEDS_CONTENT
    evidence: tuple[BlockHeader, BlockHeader] | None = None  # when EQUIVOCATION


def content_env(store: ContentStore) -> Env:
    def get(cid: bytes) -> bytes | None:
        if not store.has(cid):
            return None
        return store.get(cid)

    return Env(get_content=get)


@dataclass
class ChainHandle:
    proposal: Proposal
    store: ChainStore
    mempool: Mempool
    env: Env
    counters: dict[str, int] = field(default_factory=dict)
    reported: set[bytes] = field(default_factory=set)  # committers whose equivocation we reported

    @property
    def chain_id(self) -> bytes:
        return self.proposal.chain_id

    @property
    def state(self) -> State:
        return self.store.state

    @property
    def started(self) -> bool:
        """Whether the Problem block exists."""
        return self.store.head != ZERO_HASH

    def count(self, name: str) -> None:
        self.counters[name] = self.counters.get(name, 0) + 1


def decode_proposal(data: bytes) -> Proposal:
    """A proposal from the network: canonical and signed, or ``DecodeError``."""
    proposal = Proposal.decode(data)
    if not is_valid_signature(proposal):
        raise DecodeError("proposal signature does not verify")
    return proposal


class ChainManager(SyncProvider):
    """All chains of one node."""

    def __init__(self, data_dir: Path, content: ContentStore, clock: Clock, clock_drift_s: float = 2.0) -> None:
        self.data_dir = Path(data_dir)
        self.content = content
        self.clock = clock
        self.clock_drift_s = clock_drift_s
        self.env = content_env(content)
        self.chains: dict[bytes, ChainHandle] = {}
        (self.data_dir / "proposals").mkdir(parents=True, exist_ok=True)
        for path in sorted((self.data_dir / "proposals").glob("*.bin")):
            try:
                self.add_proposal(decode_proposal(path.read_bytes()))
            except ChainError as exc:
                log.error("skipping unreadable proposal %s: %s", path.name, exc)

    def close(self) -> None:
        for handle in self.chains.values():
            handle.store.close()

    # --- chains -----------------------------------------------------------------------
    def add_proposal(self, proposal: Proposal) -> tuple[ChainHandle, bool]:
        """Follow the chain of ``proposal``; returns (handle, newly added)."""
        chain_id = proposal.chain_id
        if chain_id in self.chains:
            return self.chains[chain_id], False
        path = self.data_dir / "proposals" / f"{chain_id.hex()}.bin"
        with data_dir_writes():
            if not path.exists():
                tmp = path.with_suffix(".tmp")
                tmp.write_bytes(proposal.encode())
                tmp.replace(path)
            store = ChainStore(self.data_dir / "chains" / chain_id.hex())
        self._rebuild_receipts(store)
        handle = ChainHandle(proposal, store, Mempool(chain_id, self.clock_drift_s), self.env)
        self.chains[chain_id] = handle
        self.pin_needed(handle)
        return handle, True

    def _rebuild_receipts(self, store: ChainStore) -> None:
        """A store written before receipts were kept gets them once, from its own blocks.

        Without the content its blocks need it stays as it is (its receipts are then
        unavailable over RPC) and is tried again the next time the node opens it.
        """
        if not store.needs_receipts:
            return
        try:
            with data_dir_writes():
                count = store.rebuild_receipts(self.env)
        except MissingContent as exc:
            log.warning("receipts of %s not rebuilt: content %s missing", store.path.name[:16],
                        exc.content_id.hex()[:16])
            return
        log.info("rebuilt the receipts of %d blocks in %s", count, store.path.name[:16])

    def pin_needed(self, handle: ChainHandle) -> None:
        """Pin the content the chain needs that we hold (the rest is pinned once fetched)."""
        with data_dir_writes():
            for cid in self.needed_content(handle):
                if self.content.has(cid):
                    self.content.pin(cid, "problem")

    def needed_content(self, handle: ChainHandle) -> list[bytes]:
        """Content the chain needs to stay verifiable: Z, Z_h and DEL artifacts of its tuples."""
        p = handle.proposal
        ids = [p.first_tuple.z_id, p.first_tuple.del_id]
        if handle.started:
            for t in get_problem(handle.state).tuples:
                ids += [t.z_id, t.del_id]
            season = get_meta(handle.state).season
            if season is not None and season.holdout is not None:
                ids.append(season.holdout.z_h_id)
        else:
            if p.holdout is not None:
                ids.append(p.holdout.z_h_id)
            for t in handle.mempool.test_tuples:  # tuples added during T_p: the Problem block needs their DEL
                ids += [t.z_id, t.del_id]
        return list(dict.fromkeys(ids))

    def get(self, chain_id: bytes) -> ChainHandle | None:
        return self.chains.get(chain_id)

    # --- import -----------------------------------------------------------------------
    def import_block(self, handle: ChainHandle, data: bytes) -> ImportReport:
        """Import a block from the wire and settle the pool on the new head, in one call."""
        return self.settle(handle, self.store_import(handle, data))

    def check_header(self, handle: ChainHandle, data: bytes) -> BlockHeader | None:
        """The header-first checks alone (no body decoded); None for a block already stored."""
        checked = handle.store.check_wire_header(data, handle.env, handle.proposal.params,
                                                 max_timestamp=self.clock.now() + self.clock_drift_s)
        return None if checked is None else checked[0]

    def store_import(self, handle: ChainHandle, data: bytes) -> ImportReport:
        """Store a block and classify the outcome; the pool is not touched (``settle`` does that).

        Safe on a worker thread while the event loop reads the chain: the store swaps its head
        state in one assignment, and one importer at a time calls this.
        """
        try:
            with data_dir_writes():  # a refused write is the node's failure, never the block's
                result = handle.store.import_bytes(data, handle.env, handle.proposal.params,
                                                   max_timestamp=self.clock.now() + self.clock_drift_s)
        except (DecodeError, InvalidBlock) as exc:
            handle.count("blocks_invalid")
            return ImportReport(ImportVerdict.INVALID, error=str(exc))
        except FutureBlock:
            return ImportReport(ImportVerdict.FUTURE)
        except UnknownParent as exc:
            return ImportReport(ImportVerdict.NEEDS_PARENT, error=str(exc))
        except MissingContent as exc:
            return ImportReport(ImportVerdict.NEEDS_CONTENT, missing=exc.content_id)
        except CommitterEquivocation as exc:
            handle.count("blocks_equivocating")
            return ImportReport(ImportVerdict.EQUIVOCATION, error=str(exc), evidence=(exc.first, exc.second))
        except ChainError as exc:  # any other protocol refusal
            handle.count("blocks_invalid")
            return ImportReport(ImportVerdict.INVALID, error=str(exc))
        if result.status == "known":
            return ImportReport(ImportVerdict.KNOWN, result)
        handle.count("blocks_imported")
        if result.equivocation is not None:
            handle.count("blocks_equivocating")
            return ImportReport(ImportVerdict.EQUIVOCATION, result, evidence=result.equivocation)
        return ImportReport(ImportVerdict.ACCEPTED, result)

    def settle(self, handle: ChainHandle, report: ImportReport) -> ImportReport:
        """After a new head: the pool drops what it made stale and takes back what a reorg orphaned."""
        result = report.result
        if result is None or result.status not in ("head", "reorg"):
            return report
        if result.status == "reorg":
            self._return_orphaned_txs(handle, result.reorged_out)
        handle.mempool.prune(handle.state, self.clock.now())
        self.pin_needed(handle)
        return report

    def _return_orphaned_txs(self, handle: ChainHandle, removed: tuple[bytes, ...]) -> None:
        """Put the transactions of blocks a reorg took off the chain back in the pool.

        The surviving branch may not hold them (a healed partition: the losing side's
        transfers, bonds, registrations), and their senders have already been told they
        were included. The pool takes back only what still executes in nonce order on
        the new head (``Mempool.add_tx``, then ``prune``); the rest was included on the
        new branch too, or was spent there. They are not gossiped again (gossip drops a
        message id it has seen), but every committer that sealed them holds them now.
        """
        for block_hash in removed:
            block = handle.store.get_block(block_hash)
            if block is None or not isinstance(block.body, ImprovementBody):
                continue
            for tx in block.body.transactions:
                if handle.mempool.add_tx(tx, handle.state) is Verdict.ACCEPT:
                    handle.count("txs_returned_by_reorg")

    # --- SyncProvider -------------------------------------------------------------------
    def get_head(self, chain_id: bytes) -> SyncHead | None:
        handle = self.chains.get(chain_id)
        if handle is None or not handle.started:
            return None
        tip = handle.store.tip()
        return SyncHead(height=tip.height, block_hash=tip.head, weight=tip.weight)

    def get_blocks(self, chain_id: bytes, start_height: int, count: int) -> list[bytes]:
        handle = self.chains.get(chain_id)
        if handle is None:
            return []
        return list(handle.store.iter_canonical(start_height, count))

    def get_headers(self, chain_id: bytes, start_height: int, count: int) -> list[bytes]:
        return [split_block(raw)[0].encode() for raw in self.get_blocks(chain_id, start_height, count)]
