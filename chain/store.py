"""Persistent chain store over LevelDB (plyvel): the only module that touches disk.

Layout of one chain's database (one-byte prefixes):

    B + hash            block bytes (every block seen, canonical or not)
    W + hash            [height, cumulative weight, parent]  (fork choice)
    H + height(8 BE)    canonical block hash at that height
    S + key             the head state's entries
    U + hash            undo journal of a canonical block: [[key, old value or nil], ...]
    C + committer + period(4 BE)   hashes of the (at most two) blocks stored for that committer and period
    h                   head hash

Every block's writes (block, index, state diff, undo, head) go in one atomic
write batch, so a process killed at any point reopens to a consistent head.
A batch LevelDB refuses (a full disk, an I/O error) is applied neither on disk
nor in memory; the store then takes no further write (LevelDB's log may end in
a torn record that only a reopen skips) and raises ``StoreWriteError``, or
``StoreFull`` when the filesystem is out of space. Opening checks that the head
has its weight record, height index and undo journal, as every batch leaves it.
A heavier side chain triggers a reorg: the head state is rolled back with the
undo journals to the common ancestor and the new branch applied, all in one
batch.

Every block passes the header-first checks (signature; committer rule over the set in
force at its period, read from the problem's parameters for a fixed set, else from the
head's state or, for a side block more than ``committer_delay`` periods past its fork
point, from its parent's state rebuilt in memory; then chain id, ejection, one block per committer and
period, known parent) before its body is decoded, hashed against the header or
stored, so nothing unsigned is ever written or relayed. A second block from the
same committer for the same period is stored (a node that saw it first must be
able to follow a heavier chain built on it) and returned with both headers as
evidence; a third is refused with ``CommitterEquivocation``, so one committer can
add at most two blocks per period.
"""

from __future__ import annotations

import dataclasses
import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Iterator

import msgpack
import plyvel

from .committers import committers_at, covers, is_committer_key, is_fixed_set
from .consensus import ChainTip, better_tip, block_weight, skipped_periods
from .constants import ZERO_HASH
from .crypto import sha256
from .errors import (
    BodyHashMismatch,
    ChainError,
    CommitterEquivocation,
    FutureBlock,
    UnknownCommitter,
    UnknownParent,
)
from .state import State, get_meta, get_problem
from .transition import (
    BlockOutcome,
    Env,
    check_chain_id,
    check_committer_rule,
    check_committer_signature,
    check_not_ejected,
    check_raw_body_limits,
    params_for,
    process_block,
)
from .types import Block, BlockHeader, ProblemBody, ProblemParams, body_hash, decode_body, split_block

P_BLOCK: Final[bytes] = b"B"
P_WEIGHT: Final[bytes] = b"W"
P_HEIGHT: Final[bytes] = b"H"
P_STATE: Final[bytes] = b"S"
P_UNDO: Final[bytes] = b"U"
P_SIGNED: Final[bytes] = b"C"
K_HEAD: Final[bytes] = b"h"

# LevelDB's memtable (its default, set explicitly so this stays true): a flush writes a
# table of about this size, the largest write a batch can set off. A failed write with
# less free space than this on the store's filesystem is a full disk.
WRITE_BUFFER_BYTES: Final[int] = 4 << 20


class StoreError(ChainError):
    """The database is missing, locked by another process, or inconsistent."""


class StoreWriteError(StoreError):
    """LevelDB refused a write batch: nothing of it was applied, and the store takes no
    further write until it is reopened (its log may end in a torn record)."""

    def __init__(self, path: Path, detail: str) -> None:
        self.path = path
        self.detail = detail
        super().__init__(f"cannot write to chain store {path}: {detail}")


class StoreFull(StoreWriteError):
    """The write failed and the store's filesystem has no room for LevelDB's next write."""


def is_disk_full(path: Path) -> bool:
    """Whether ``path``'s filesystem has less free space than one memtable flush, or no free inode.

    plyvel reports LevelDB's I/O errors as text without an errno, so a failed write is
    judged by the filesystem it failed on, measured right after.
    """
    try:
        fs = os.statvfs(path)
    except OSError:
        return False
    no_inode = fs.f_files > 0 and fs.f_ffree == 0
    return fs.f_bfree * fs.f_frsize < WRITE_BUFFER_BYTES or no_inode


def write_error(path: Path, exc: Exception) -> StoreWriteError:
    """The typed error for a failed LevelDB write (or open) in ``path``."""
    cls = StoreFull if is_disk_full(path) else StoreWriteError
    return cls(path, str(exc))


@dataclass(frozen=True)
class ImportResult:
    """What ``import_block`` did."""

    status: str  # "head" (extended), "reorg", "side" (stored, lighter), "known"
    block_hash: bytes
    outcome: BlockOutcome | None = None
    reorged_out: tuple[bytes, ...] = ()
    # (first, this) when the block is its committer's second for its period: evidence
    equivocation: tuple[BlockHeader, BlockHeader] | None = None


def _height_key(height: int) -> bytes:
    return P_HEIGHT + height.to_bytes(8, "big")


def _signed_key(header: BlockHeader) -> bytes:
    return P_SIGNED + header.committer + header.period.to_bytes(4, "big")


MAX_BLOCKS_PER_SIGNER_PERIOD: Final[int] = 2  # the first block and the one that proves equivocation


class ChainStore:
    """One problem chain on disk, with its head state kept in memory."""

    def __init__(self, path: str | os.PathLike[str], *, sync: bool = False) -> None:
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        try:
            self.db = plyvel.DB(str(self.path), create_if_missing=True, write_buffer_size=WRITE_BUFFER_BYTES)
        except plyvel.IOError as exc:
            if is_disk_full(self.path):  # opening replays LevelDB's log into a new table
                raise StoreFull(self.path, str(exc)) from None
            raise StoreError(f"cannot open chain store {self.path}: {exc}") from None
        self.sync = sync
        self._write_failure: StoreWriteError | None = None
        try:
            self._check_head()
        except StoreError:
            self.db.close()
            raise
        self.state = self._load_state()

    # --- opening -----------------------------------------------------------------------
    def _load_state(self) -> State:
        head = self.db.get(K_HEAD)
        entries = {k[1:]: v for k, v in self.db.iterator(prefix=P_STATE)}
        state = State(entries, head=head or ZERO_HASH)
        state.copy()  # freeze the loaded entries as a base layer
        return state

    def _check_head(self) -> None:
        """The head has what its batch wrote with it, and nothing canonical lies above it.

        Every batch writes these together, so a store that breaks this was damaged or
        written by something else: refuse it rather than build on it.
        """
        head = self.db.get(K_HEAD)
        if head is None:
            return
        raw = self.db.get(P_WEIGHT + head)
        if raw is None or self.db.get(P_BLOCK + head) is None:
            raise StoreError(f"{self.path}: head {head.hex()[:16]} has no block or weight record")
        height = msgpack.unpackb(raw)[0]
        if self.db.get(_height_key(height)) != head or self.db.get(P_UNDO + head) is None:
            raise StoreError(f"{self.path}: head {head.hex()[:16]} is not indexed at height {height} or has no undo journal")
        if self.db.get(_height_key(height + 1)) is not None:
            raise StoreError(f"{self.path}: a canonical block above the head (height {height + 1})")

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> "ChainStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- reads -------------------------------------------------------------------------
    @property
    def head(self) -> bytes:
        return self.state.head

    @property
    def height(self) -> int:
        if self.head == ZERO_HASH:
            return -1
        return self._weight(self.head)[0]

    def has_block(self, block_hash: bytes) -> bool:
        return self.db.get(P_BLOCK + block_hash) is not None

    def get_block_bytes(self, block_hash: bytes) -> bytes | None:
        return self.db.get(P_BLOCK + block_hash)  # type: ignore[no-any-return]

    def get_block(self, block_hash: bytes) -> Block | None:
        raw = self.get_block_bytes(block_hash)
        return None if raw is None else Block.decode(raw)

    def canonical_hash(self, height: int) -> bytes | None:
        if height < 0:
            return None
        return self.db.get(_height_key(height))  # type: ignore[no-any-return]

    def get_block_by_height(self, height: int) -> Block | None:
        h = self.canonical_hash(height)
        return None if h is None else self.get_block(h)

    def iter_canonical(self, start: int = 0, count: int | None = None) -> Iterator[bytes]:
        """Canonical block bytes from ``start`` (for sync)."""
        end = self.height + 1 if count is None else min(self.height + 1, start + count)
        for height in range(max(0, start), end):
            h = self.canonical_hash(height)
            if h is None:
                return
            raw = self.get_block_bytes(h)
            if raw is not None:
                yield raw

    def tip(self) -> ChainTip:
        height, weight, _ = self._weight(self.head)
        return ChainTip(weight=weight, head=self.head, height=height)

    def _weight(self, block_hash: bytes) -> tuple[int, int, bytes]:
        """``(height, cumulative weight, parent)``; the zero hash is 'before genesis'."""
        if block_hash == ZERO_HASH:
            return -1, 0, ZERO_HASH
        raw = self.db.get(P_WEIGHT + block_hash)
        if raw is None:
            raise StoreError(f"no weight record for block {block_hash.hex()[:16]}")
        height, weight, parent = msgpack.unpackb(raw)
        return height, weight, parent

    # --- writes ------------------------------------------------------------------------
    @contextmanager
    def _batch(self) -> Iterator[plyvel.WriteBatch]:
        """One atomic write batch; a failed write is typed, kept and raised again on any later write."""
        if self._write_failure is not None:
            raise self._write_failure
        try:
            with self.db.write_batch(transaction=True, sync=self.sync) as wb:
                yield wb
        except plyvel.Error as exc:
            self._write_failure = write_error(self.path, exc)
            raise self._write_failure from exc

    def import_block(self, block: Block, env: Env) -> ImportResult:
        """Validate and store a decoded ``block``; move the head if its chain is heavier.

        Raises an ``InvalidBlock`` subclass for an invalid block, ``MissingContent``
        when content is missing (the caller defers), ``UnknownParent`` for an unknown
        parent (the caller syncs the gap) and ``CommitterEquivocation`` for a third
        block by one committer for one period (a second is stored, with its evidence
        in ``ImportResult.equivocation``).
        """
        if self.has_block(block.hash):
            return ImportResult("known", block.hash)
        self._check_header(params_for(self.state, block), block.header, env)
        computed = body_hash(block.body)
        if computed != block.header.body_hash:
            raise BodyHashMismatch(block.header.body_hash, computed)
        return self._import_checked(block, env)

    def import_bytes(self, data: bytes, env: Env, params: ProblemParams | None = None,
                     max_timestamp: float | None = None) -> ImportResult:
        """``import_block`` from the wire: the header is checked before the body is decoded.

        ``params`` are the chain's (from its proposal); needed only before the
        Problem block is stored. A validly signed header stamped after
        ``max_timestamp`` (the caller's clock) raises ``FutureBlock``. The body's bytes
        are hashed against the header, and
        its anchor's sizes checked against the problem's limits on the raw lists,
        before any body object is built.
        """
        checked = self.check_wire_header(data, env, params, max_timestamp)
        if checked is None:
            return ImportResult("known", split_block(data)[0].hash)
        header, body_raw, params = checked
        body = decode_body(body_raw, lambda obj: check_raw_body_limits(params, obj))
        return self._import_checked(Block(header, body), env)

    def check_wire_header(self, data: bytes, env: Env, params: ProblemParams | None = None,
                          max_timestamp: float | None = None) -> tuple[BlockHeader, bytes, ProblemParams] | None:
        """The checks ``import_bytes`` makes before decoding a body: None for a known block.

        A gossip validator runs these alone (a fixed, small cost) and leaves the body's
        decoding and execution to an import off the event loop. Raises what ``import_bytes``
        raises for the header: a bad signature or committer, ``UnknownParent``,
        ``CommitterEquivocation`` (a third block), ``FutureBlock``, ``BodyHashMismatch``.
        """
        header, body_raw = split_block(data)
        if self.has_block(header.hash):
            return None
        if params is None:
            if self.head == ZERO_HASH:
                raise StoreError("the chain's parameters are needed to check a header before its Problem block")
            params = get_problem(self.state).params
        self._check_header(params, header, env)
        if max_timestamp is not None and header.timestamp > max_timestamp:
            raise FutureBlock(header.timestamp, max_timestamp)
        computed = sha256(body_raw)
        if computed != header.body_hash:
            raise BodyHashMismatch(header.body_hash, computed)
        return header, body_raw, params

    def _check_header(self, params: ProblemParams, header: BlockHeader, env: Env) -> None:
        """Header-first checks, cheapest refusal first; nothing is decoded or written before them."""
        check_committer_signature(header)
        committers = self._committers_for(params, header, env)
        if committers is None:  # unknown parent: only a key that has a committer record passes
            if not is_committer_key(self.state, params, header.committer):
                raise UnknownCommitter(header.committer)
        else:
            check_committer_rule(params, header, committers)
        if self.head != ZERO_HASH:
            check_chain_id(get_problem(self.state).chain_id, header)
            check_not_ejected(self.state, header.committer)
        signed = self._signed_by(header)
        if len(signed) >= MAX_BLOCKS_PER_SIGNER_PERIOD:
            raise CommitterEquivocation(self._stored_header(signed[0]), header)
        if header.parent != ZERO_HASH and not self.has_block(header.parent):
            raise UnknownParent(header.parent)

    def _committers_for(self, params: ProblemParams, header: BlockHeader, env: Env) -> tuple[bytes, ...] | None:
        """The set in force at ``header``'s period on its branch; None when its parent is unknown.

        A fixed set comes from the parameters alone. Otherwise the set at period ``k`` is fixed
        by any state of the branch at most ``D`` periods older (``chain.committers``), so the
        head's state answers for the head's children and for a side block at most ``D``
        periods past its fork point (changes made on the head's side after the fork take
        effect later than that). A deeper side block is checked against its parent's state,
        rebuilt from the fork point; only blocks whose own headers passed are on that path.
        """
        if is_fixed_set(params) or header.parent == ZERO_HASH:
            return params.committers
        if header.parent == self.head:
            return committers_at(self.state, params, header.period)
        if not self.has_block(header.parent):
            return None
        fork = self._fork_point(header.parent)
        fork_period = self._parent_period(fork)
        if fork_period is not None and header.period <= fork_period + params.committer_delay \
                and covers(self.state, params, header.period):
            return committers_at(self.state, params, header.period)
        return committers_at(self._state_after(header.parent, env), params, header.period)

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

    def has_signed(self, committer: bytes, period: int) -> bool:
        """Whether a block by ``committer`` for ``period`` is stored (a committer never signs twice)."""
        return self.db.get(P_SIGNED + committer + period.to_bytes(4, "big")) is not None

    def _signed_by(self, header: BlockHeader) -> list[bytes]:
        """Hashes of the blocks stored for ``header``'s committer and period."""
        raw = self.db.get(_signed_key(header)) or b""
        return [raw[i : i + 32] for i in range(0, len(raw), 32)]

    def _index_signed(self, wb: Any, header: BlockHeader) -> None:
        signed = self._signed_by(header)
        if header.hash not in signed:
            wb.put(_signed_key(header), b"".join([*signed, header.hash]))

    def _stored_header(self, block_hash: bytes) -> BlockHeader:
        raw = self.get_block_bytes(block_hash)
        if raw is None:
            raise StoreError(f"missing block {block_hash.hex()[:16]}")
        return split_block(raw)[0]

    def _import_checked(self, block: Block, env: Env) -> ImportResult:
        signed = self._signed_by(block.header)
        evidence = (self._stored_header(signed[0]), block.header) if signed else None
        if block.header.parent == self.head:
            outcome = process_block(self.state, block, env, header_checked=True)
            parent_period = get_meta(self.state).period if self.head != ZERO_HASH else None
            weight = self.tip().weight + self._block_weight(outcome.state, block, parent_period)
            self._write_extension(block, outcome.state, weight)
            self.state = outcome.state
            result = ImportResult("head", block.hash, outcome)
        else:
            result = self._import_side(block, env)
        return dataclasses.replace(result, equivocation=evidence) if evidence else result

    def _parent_period(self, parent: bytes) -> int | None:
        """The period of a stored block (its header alone is decoded); None before genesis."""
        if parent == ZERO_HASH:
            return None
        raw = self.get_block_bytes(parent)
        if raw is None:
            raise StoreError(f"missing block {parent.hex()[:16]}")
        return split_block(raw)[0].period

    def _block_weight(self, state: State, block: Block, parent_period: int | None) -> int:
        """Weight from the state after ``block``, which still holds the set in force at its period."""
        params = get_problem(state).params
        skipped = skipped_periods(block.header.period, parent_period)
        committers = params.committers if isinstance(block.body, ProblemBody) else \
            committers_at(state, params, block.header.period)
        return block_weight(params, block.header.period, block.header.committer, skipped, committers)

    def _write_extension(self, block: Block, new_state: State, weight: int) -> None:
        block_hash = block.hash
        changes = new_state.changes()
        undo = [[k, self.state.get(k)] for k in changes]
        with self._batch() as wb:
            wb.put(P_BLOCK + block_hash, block.encode())
            wb.put(P_WEIGHT + block_hash, msgpack.packb([block.header.height, weight, block.header.parent]))
            self._index_signed(wb, block.header)
            wb.put(_height_key(block.header.height), block_hash)
            wb.put(P_UNDO + block_hash, msgpack.packb(undo))
            for key, value in changes.items():
                if value is None:
                    wb.delete(P_STATE + key)
                else:
                    wb.put(P_STATE + key, value)
            wb.put(K_HEAD, block_hash)

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
                wb.delete(_height_key(height))
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
                wb.put(_height_key(b.header.height), b.hash)
                wb.put(P_UNDO + b.hash, msgpack.packb([[k, state.get(k)] for k in changes]))
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
