"""Side branches of a chain store: storing lighter blocks, reorging onto heavier ones.

Mixed into ``chain.store.ChainStore`` (which holds the database, the head state and
the reads these use). A side block is stored after its header-first checks and
executed only when its branch becomes the heaviest; a reorg rolls the head state
back to the fork point with the undo journals and applies the new branch, its
receipts with it, in one write batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgpack

from .consensus import ChainTip, better_tip, block_weight, skipped_periods
from .constants import ZERO_HASH
from .receipts import encode_receipt
from .state import State, get_problem
from .store_errors import StoreError
from .store_layout import K_HEAD, P_BLOCK, P_RECEIPT, P_STATE, P_UNDO, P_WEIGHT, height_key
from .outcome import BlockOutcome, Env
from .transition import process_block
from .header import BlockHeader
from .types import Block, ProblemBody


@dataclass(frozen=True)
class ImportResult:
    """What ``ChainStore.import_block`` did."""

    status: str  # "head" (extended), "reorg", "side" (stored, lighter), "known"
    block_hash: bytes
    outcome: BlockOutcome | None = None
    reorged_out: tuple[bytes, ...] = ()
    # (first, this) when the block is its committer's second for its period: evidence
    equivocation: tuple[BlockHeader, BlockHeader] | None = None


class BranchMixin:
    """Side blocks and reorgs over ``ChainStore``'s database, head state and reads."""

    db: Any
    state: State

    def _fork_point(self, block_hash: bytes) -> bytes:
        """The newest canonical ancestor of a stored block (the block itself if canonical)."""
        while block_hash != ZERO_HASH:
            height, _, parent = self._weight(block_hash)
            if self.canonical_hash(height) == block_hash:
                return block_hash
            block_hash = parent
        return block_hash

    def _state_after(self, block_hash: bytes, env: Env) -> State:
        """The state after a stored block: the head's rolled back to the fork point, the branch
        applied (in memory; nothing is written)."""
        block = self.get_block(block_hash)
        if block is None:
            raise StoreError(f"missing block {block_hash.hex()[:16]}")
        branch, fork = self._branch_to_canonical(block)
        state, _, _ = self._rolled_back(fork)
        for b in branch:
            state = process_block(state, b, env, header_checked=True).state
        return state

    def _rolled_back(self, fork: bytes) -> tuple[State, dict[bytes, bytes], list[bytes]]:
        """The state at canonical block ``fork`` (undo journals from the head), the head's entries
        on disk, and the canonical hashes rolled back (head first)."""
        fork_height = self._weight(fork)[0]
        on_disk = {k[1:]: v for k, v in self.db.iterator(prefix=P_STATE)}
        entries = dict(on_disk)
        removed: list[bytes] = []
        for height in range(self.height, fork_height, -1):
            h = self.canonical_hash(height)
            assert h is not None
            for key, old in msgpack.unpackb(self.db.get(P_UNDO + h)):
                if old is None:
                    entries.pop(key, None)
                else:
                    entries[key] = old
            removed.append(h)
        return State(entries, head=fork), on_disk, removed

    def _import_side(self, block: Block, env: Env) -> ImportResult:
        """Store a block off the head; reorg onto its branch if that branch is heavier."""
        _, parent_weight, _ = self._weight(block.header.parent)
        weight = parent_weight + self._side_block_weight(block, env)
        candidate = ChainTip(weight=weight, head=block.hash, height=block.header.height)
        if better_tip(self.tip(), candidate) is not candidate:
            # Not heavier: keep it (its header passed every header-first check; it is
            # executed if its branch ever becomes the heaviest).
            with self._batch() as wb:
                wb.put(P_BLOCK + block.hash, block.encode())
                wb.put(P_WEIGHT + block.hash, msgpack.packb([block.header.height, weight, block.header.parent]))
                self._index_signed(wb, block.header)
            return ImportResult("side", block.hash)
        return self._reorg(block, weight, env)

    def _side_block_weight(self, block: Block, env: Env) -> int:
        """Weight from the block's own proposal (a rival Problem block) or the chain's, over the
        set in force at its period on its branch."""
        if isinstance(block.body, ProblemBody):
            params = block.body.proposal.params
        else:
            params = get_problem(self.state).params
        committers = self._committers_for(params, block.header, env)
        skipped = skipped_periods(block.header.period, self._parent_period(block.header.parent))
        return block_weight(params, block.header.period, block.header.committer, skipped, committers)

    def _branch_to_canonical(self, block: Block) -> tuple[list[Block], bytes]:
        """Blocks from the fork point (exclusive) to ``block`` (inclusive), and the fork point."""
        branch = [block]
        parent = block.header.parent
        while parent != ZERO_HASH:
            height, _, grand = self._weight(parent)
            if self.canonical_hash(height) == parent:
                break
            side = self.get_block(parent)
            if side is None:
                raise StoreError(f"missing side block {parent.hex()[:16]}")
            branch.append(side)
            parent = grand
        branch.reverse()
        return branch, parent

    def _reorg(self, block: Block, weight: int, env: Env) -> ImportResult:
        branch, fork = self._branch_to_canonical(block)
        fork_height = self._weight(fork)[0]
        # Roll the head state back to the fork point with the undo journals.
        base, on_disk, removed = self._rolled_back(fork)
        # Apply the new branch; any invalid block aborts before anything is written.
        state = base
        w = self._weight(fork)[1]
        outcome = None
        with self._batch() as wb:
            for height in range(fork_height + 1, self.height + 1):
                wb.delete(height_key(height))
            parent_period = self._parent_period(fork)
            for b in branch:
                # every branch block passed the header-first checks when it was stored
                outcome = process_block(state, b, env, header_checked=True)
                w += self._block_weight(outcome.state, b, parent_period)
                parent_period = b.header.period
                changes = outcome.state.changes()
                wb.put(P_BLOCK + b.hash, b.encode())
                wb.put(P_WEIGHT + b.hash, msgpack.packb([b.header.height, w, b.header.parent]))
                self._index_signed(wb, b.header)
                wb.put(height_key(b.header.height), b.hash)
                wb.put(P_UNDO + b.hash, msgpack.packb([[k, state.get(k)] for k in changes]))
                wb.put(P_RECEIPT + b.hash, encode_receipt(outcome.receipt))
                state = outcome.state
            final_entries = dict(state.items())
            for key in set(on_disk) | set(final_entries):
                value = final_entries.get(key)
                if value is None:
                    wb.delete(P_STATE + key)
                elif on_disk.get(key) != value:
                    wb.put(P_STATE + key, value)
            wb.put(K_HEAD, block.hash)
        self.state = state
        return ImportResult("reorg", block.hash, outcome, tuple(removed))
