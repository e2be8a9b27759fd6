"""The problem chains a node follows: one store, pool and content view per chain.

A chain is known from its signed proposal (persisted under ``proposals/`` so a
restart before the Problem block still knows it) and lives in
``chains/<chain id hex>/`` as a LevelDB store. Importing classifies every
outcome the network needs to act on: accepted, invalid (penalise), or
deferred (a missing parent to sync, content to fetch, a timestamp ahead of our
clock).
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass, field
from pathlib import Path

from chain.codec import unpack_canonical
from chain.errors import ChainError, DecodeError, InvalidBlock, InvalidHeader, MissingContent
from chain.signing import is_valid_signature
from chain.state import State, get_meta, get_problem
from chain.store import ChainStore, ImportResult
from chain.transition import Env
from chain.types import Block, ImprovementBody, Proposal
from chain.constants import ZERO_HASH
from p2p import ContentStore, SyncHead, SyncProvider

from .clock import Clock
from .mempool import Mempool, Verdict

log = logging.getLogger(__name__)


class ImportVerdict(enum.Enum):
    ACCEPTED = "accepted"  # new head or stored side block
    KNOWN = "known"
    INVALID = "invalid"
    NEEDS_PARENT = "needs_parent"
    NEEDS_CONTENT = "needs_content"
    FUTURE = "future"


@dataclass
class ImportReport:
    verdict: ImportVerdict
    result: ImportResult | None = None
    error: str = ""
    missing: bytes | None = None  # content id, when NEEDS_CONTENT


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
        if not path.exists():
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(proposal.encode())
            tmp.replace(path)
        store = ChainStore(self.data_dir / "chains" / chain_id.hex())
        handle = ChainHandle(proposal, store, Mempool(chain_id, self.clock_drift_s), self.env)
        self.chains[chain_id] = handle
        for cid in self.needed_content(handle):
            self.content.pin(cid, "problem") if self.content.has(cid) else None
        return handle, True

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
        elif p.holdout is not None:
            ids.append(p.holdout.z_h_id)
        return list(dict.fromkeys(ids))

    def get(self, chain_id: bytes) -> ChainHandle | None:
        return self.chains.get(chain_id)

    # --- import -----------------------------------------------------------------------
    def import_block(self, handle: ChainHandle, data: bytes) -> ImportReport:
        try:
            block = Block.decode(data)
        except DecodeError as exc:
            handle.count("blocks_invalid")
            return ImportReport(ImportVerdict.INVALID, error=str(exc))
        return self.import_decoded(handle, block)

    def import_decoded(self, handle: ChainHandle, block: Block) -> ImportReport:
        if block.header.chain_id != handle.chain_id:
            return ImportReport(ImportVerdict.INVALID, error="block for another chain")
        if block.header.timestamp > self.clock.now() + self.clock_drift_s:
            return ImportReport(ImportVerdict.FUTURE)
        try:
            result = handle.store.import_block(block, handle.env)
        except MissingContent as exc:
            return ImportReport(ImportVerdict.NEEDS_CONTENT, missing=exc.content_id)
        except InvalidHeader as exc:
            if "unknown parent" in str(exc) or ("wrong parent" in str(exc) and not handle.store.has_block(block.header.parent)):
                return ImportReport(ImportVerdict.NEEDS_PARENT, error=str(exc))
            handle.count("blocks_invalid")
            return ImportReport(ImportVerdict.INVALID, error=str(exc))
        except (InvalidBlock, ChainError) as exc:
            handle.count("blocks_invalid")
            return ImportReport(ImportVerdict.INVALID, error=str(exc))
        if result.status == "known":
            return ImportReport(ImportVerdict.KNOWN, result)
        handle.count("blocks_imported")
        if result.status == "reorg":
            self._return_orphaned_txs(handle, result.reorged_out)
        if result.status in ("head", "reorg"):
            handle.mempool.prune(handle.state, self.clock.now())
            for cid in self.needed_content(handle):
                if self.content.has(cid):
                    self.content.pin(cid, "problem")
        return ImportReport(ImportVerdict.ACCEPTED, result)

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
        from chain.codec import pack

        out = []
        for raw in self.get_blocks(chain_id, start_height, count):
            obj = unpack_canonical(raw)
            out.append(pack(obj[0]))
        return out
