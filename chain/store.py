"""Persistent chain store over LevelDB (plyvel): the only module that touches disk.

The keys are laid out in ``chain.store_layout``.

Every block's writes (block, index, state diff, undo, receipt, head) go in one atomic
write batch, so a process killed at any point reopens to a consistent head.
A batch LevelDB refuses (a full disk, an I/O error) is applied neither on disk
nor in memory; the store then takes no further write (LevelDB's log may end in
a torn record that only a reopen skips) and raises ``StoreWriteError``, or
``StoreFull`` when the filesystem is out of space. Opening checks that the head
has its weight record, height index and undo journal, as every batch leaves it.
A heavier side chain triggers a reorg: the head state is rolled back with the
undo journals to the common ancestor and the new branch applied, all in one
batch (``chain.store_branches``). A receipt depends only on the block and its parent's state, so it is
keyed by block hash and outlives a reorg. A store from before receipts (no
version) opens, with ``needs_receipts`` set, until ``rebuild_receipts``
re-executes its canonical chain once; reading a missing receipt raises
``ReceiptsMissing``.

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
from pathlib import Path
from typing import Any, Final, Iterator

import msgpack
import plyvel

from .committers import committers_at, covers, is_committer_key, is_fixed_set
from .consensus import ChainTip, block_weight, skipped_periods
from .constants import ZERO_HASH
from .crypto import sha256
from .errors import (
    BodyHashMismatch,
    DecodeError,
    CommitterEquivocation,
    FutureBlock,
    UnknownCommitter,
    UnknownParent,
)
from .receipts import decode_receipt, encode_receipt
from .state import State, get_meta, get_problem
from .store_errors import (  # re-exported: the store's failures are part of its interface
    WRITE_BUFFER_BYTES,
    ReceiptsMissing,
    StoreError,
    StoreFull,
    StoreWriteError,
    is_disk_full,
    write_error,
)
from .store_branches import BranchMixin, ImportResult
from .store_layout import (
    K_HEAD,
    K_VERSION,
    LAYOUT_VERSION,
    P_BLOCK,
    P_RECEIPT,
    P_SIGNED,
    P_STATE,
    P_UNDO,
    P_WEIGHT,
    height_key,
    signed_key,
    version_bytes,
)
from .consensus import check_committer_rule
from .outcome import BlockOutcome, BlockReceipt, Env
from .transition import (
    check_chain_id,
    check_committer_signature,
    check_not_ejected,
    check_raw_body_limits,
    params_for,
    process_block,
)
from .header import BlockHeader
from .types import Block, ProblemBody, ProblemParams, body_hash, decode_body, split_block

MAX_BLOCKS_PER_SIGNER_PERIOD: Final[int] = 2  # the first block and the one that proves equivocation


class ChainStore(BranchMixin):
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
            self.needs_receipts = self._check_version()
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
        if self.db.get(height_key(height)) != head or self.db.get(P_UNDO + head) is None:
            raise StoreError(f"{self.path}: head {head.hex()[:16]} is not indexed at height {height} or has no undo journal")
        if self.db.get(height_key(height + 1)) is not None:
            raise StoreError(f"{self.path}: a canonical block above the head (height {height + 1})")

    def _check_version(self) -> bool:
        """Whether the store predates stored receipts; a new store is stamped with the layout."""
        raw = self.db.get(K_VERSION)
        if raw is None and self.db.get(K_HEAD) is not None:
            return True
        if raw is None:
            with self._batch() as wb:
                wb.put(K_VERSION, version_bytes())
        elif int.from_bytes(raw, "big") > LAYOUT_VERSION:
            raise StoreError(f"{self.path}: layout version {int.from_bytes(raw, 'big')} is newer than this node's")
        return False

    def rebuild_receipts(self, env: Env) -> int:
        """Write the receipts a store from before them lacks: its canonical chain re-executed
        from genesis once (signatures verified, as on import), in one batch with the version.

        Raises ``MissingContent`` when content a block needs is not at hand, and
        ``StoreError`` if the re-executed chain does not end at the stored head state.
        """
        state, receipts = State(), []
        for height in range(self.height + 1):
            block = self.get_block_by_height(height)
            if block is None:
                raise StoreError(f"{self.path}: canonical block {height} missing")
            outcome = process_block(state, block, env)
            state = outcome.state
            receipts.append((block.hash, outcome.receipt))
        if state.root != self.state.root:
            raise StoreError(f"{self.path}: the re-executed chain does not reach the stored head state")
        with self._batch() as wb:
            for block_hash, receipt in receipts:
                wb.put(P_RECEIPT + block_hash, encode_receipt(receipt))
            wb.put(K_VERSION, version_bytes())
        self.needs_receipts = False
        return len(receipts)

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
        return self.db.get(height_key(height))  # type: ignore[no-any-return]

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

    def get_receipt(self, block_hash: bytes) -> BlockReceipt | None:
        """What executing a stored block did; None for a block never executed (a side block)."""
        raw = self.db.get(P_RECEIPT + block_hash)
        if raw is None:
            return None
        try:
            return decode_receipt(raw)
        except DecodeError as exc:
            raise StoreError(f"{self.path}: unreadable receipt of {block_hash.hex()[:16]}: {exc}") from None

    def receipt_at(self, height: int) -> tuple[bytes, BlockReceipt]:
        """The canonical block hash at ``height`` (``LookupError`` above the head) and its receipt."""
        block_hash = self.canonical_hash(height)
        if block_hash is None:
            raise LookupError(f"no canonical block at height {height}")
        receipt = self.get_receipt(block_hash)
        if receipt is None:
            raise ReceiptsMissing(self.path, height)
        return block_hash, receipt

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
            raise CommitterEquivocation(self.get_header(signed[0]), header)
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

    def has_signed(self, committer: bytes, period: int) -> bool:
        """Whether a block by ``committer`` for ``period`` is stored (a committer never signs twice)."""
        return self.db.get(P_SIGNED + committer + period.to_bytes(4, "big")) is not None

    def _signed_by(self, header: BlockHeader) -> list[bytes]:
        """Hashes of the blocks stored for ``header``'s committer and period."""
        raw = self.db.get(signed_key(header)) or b""
        return [raw[i : i + 32] for i in range(0, len(raw), 32)]

    def _index_signed(self, wb: Any, header: BlockHeader) -> None:
        signed = self._signed_by(header)
        if header.hash not in signed:
            wb.put(signed_key(header), b"".join([*signed, header.hash]))

    def get_header(self, block_hash: bytes) -> BlockHeader:
        """A stored block's header; its body is not decoded."""
        raw = self.get_block_bytes(block_hash)
        if raw is None:
            raise StoreError(f"missing block {block_hash.hex()[:16]}")
        return split_block(raw)[0]

    def _import_checked(self, block: Block, env: Env) -> ImportResult:
        signed = self._signed_by(block.header)
        evidence = (self.get_header(signed[0]), block.header) if signed else None
        if block.header.parent == self.head:
            outcome = process_block(self.state, block, env, header_checked=True)
            parent_period = get_meta(self.state).period if self.head != ZERO_HASH else None
            weight = self.tip().weight + self._block_weight(outcome.state, block, parent_period)
            self._write_extension(block, outcome, weight)
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

    def _write_extension(self, block: Block, outcome: BlockOutcome, weight: int) -> None:
        block_hash = block.hash
        changes = outcome.state.changes()
        undo = [[k, self.state.get(k)] for k in changes]
        with self._batch() as wb:
            wb.put(P_BLOCK + block_hash, block.encode())
            wb.put(P_WEIGHT + block_hash, msgpack.packb([block.header.height, weight, block.header.parent]))
            self._index_signed(wb, block.header)
            wb.put(height_key(block.header.height), block_hash)
            wb.put(P_UNDO + block_hash, msgpack.packb(undo))
            wb.put(P_RECEIPT + block_hash, encode_receipt(outcome.receipt))
            for key, value in changes.items():
                if value is None:
                    wb.delete(P_STATE + key)
                else:
                    wb.put(P_STATE + key, value)
            wb.put(K_HEAD, block_hash)
