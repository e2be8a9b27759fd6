"""Chain state: a flat key-value map of canonical records, with an incremental root.

State is a map ``key -> canonical bytes`` so that it is stored, diffed and
hashed the same way everywhere. Typed records and ``get_*``/``set_*`` module
functions sit on top (execution-specs style).

``State.copy()`` is cheap: writes go to a new top layer over frozen lower
layers (merged once they pass ``MAX_LAYERS``), so ``apply_block`` can return a
new state while the old one stays valid for fork choice.

The state root is a fixed-shape Merkle tree over 4096 buckets keyed by the
first 12 bits of ``H(key)``; a bucket hashes its sorted ``(H(key), H(value))``
leaves. A block rehashes only the buckets it touched and their 3 ancestors, so
the cost per block follows the changes, not the size of the state.
"""

from __future__ import annotations

from typing import Final, Iterator, TypeVar

from . import constants as C
from .codec import Schema
from .crypto import sha256
from .errors import BalanceOverflow, DecodeError
from .proofs import SealedHoldout
from .records import (
    EMPTY_ACCOUNT,
    Account,
    Bond,
    ChainMeta,
    Channel,
    DigestRecord,
    Ejection,
    HoldoutMark,
    Offer,
    ProblemRecord,
    RatingMark,
    Reputation,
    SeasonImprovement,
    SeasonReference,
)

R = TypeVar("R", bound=Schema)


# Key namespaces (one byte each)
KEY_META: Final[bytes] = b"m"
KEY_PROBLEM: Final[bytes] = b"p"
PREFIX_ACCOUNT: Final[bytes] = b"a"
PREFIX_DIGEST: Final[bytes] = b"g"
PREFIX_BOND: Final[bytes] = b"v"
PREFIX_OFFER: Final[bytes] = b"o"
PREFIX_REPUTATION: Final[bytes] = b"r"
PREFIX_RATING: Final[bytes] = b"q"
PREFIX_CHANNEL: Final[bytes] = b"c"  # + payer address + runner address
PREFIX_SEASON_IMPROVEMENT: Final[bytes] = b"s"  # + season index (4 bytes) + ordinal (4 bytes)
PREFIX_EJECTED: Final[bytes] = b"e"  # + committer public key
PREFIX_SEASON_REFERENCE: Final[bytes] = b"h"  # + season index (4 bytes)
PREFIX_SEALED_AHEAD: Final[bytes] = b"n"  # + season index (4 bytes): a holdout sealed for a later season
PREFIX_HOLDOUT_MARK: Final[bytes] = b"z"  # + z_h_id or commitment: sealed once on this chain

# ---------------------------------------------------------------------------
# The root: a fixed 16-ary Merkle tree over 4096 buckets
# ---------------------------------------------------------------------------
BUCKET_BITS: Final[int] = 12
FANOUT: Final[int] = 16
LEVELS: Final[int] = 3  # 4096 -> 256 -> 16 -> root
EMPTY: Final[bytes] = C.ZERO_HASH


class RootTree:
    """Bucket leaves and internal node hashes; copies share untouched buckets."""

    __slots__ = ("buckets", "levels", "dirty")

    def __init__(self) -> None:
        self.buckets: dict[int, dict[bytes, bytes]] = {}
        # levels[0]: 4096 bucket hashes; levels[1]: 256; levels[2]: 16
        self.levels: list[list[bytes]] = [[EMPTY] * (FANOUT ** (LEVELS - i)) for i in range(LEVELS)]
        self.dirty: set[int] = set()

    def copy(self) -> "RootTree":
        other = RootTree.__new__(RootTree)
        other.buckets = dict(self.buckets)
        other.levels = [list(level) for level in self.levels]
        other.dirty = set(self.dirty)
        return other

    def put(self, key: bytes, value: bytes | None) -> None:
        kh = sha256(key)
        index = int.from_bytes(kh[:2], "big") >> (16 - BUCKET_BITS)
        bucket = dict(self.buckets.get(index, {}))  # copy on write
        if value is None:
            bucket.pop(kh, None)
        else:
            bucket[kh] = sha256(value)
        if bucket:
            self.buckets[index] = bucket
        else:
            self.buckets.pop(index, None)
        self.dirty.add(index)

    def root(self) -> bytes:
        if self.dirty:
            self._rehash()
        return sha256(b"".join(self.levels[LEVELS - 1]))

    def _rehash(self) -> None:
        touched = self.dirty
        for index in touched:
            bucket = self.buckets.get(index)
            self.levels[0][index] = (
                sha256(b"".join(k + v for k, v in sorted(bucket.items()))) if bucket else EMPTY
            )
        for level in range(1, LEVELS):
            touched = {i // FANOUT for i in touched}
            below = self.levels[level - 1]
            for i in touched:
                kids = below[i * FANOUT : (i + 1) * FANOUT]
                self.levels[level][i] = EMPTY if all(k == EMPTY for k in kids) else sha256(b"".join(kids))
        self.dirty = set()


# ---------------------------------------------------------------------------
# The state map
# ---------------------------------------------------------------------------
_DELETED: Final = None
MAX_LAYERS: Final[int] = 16


class State:
    """A key-value view: a mutable top layer over frozen lower layers."""

    __slots__ = ("_layers", "_top", "_tree", "head", "_decoded", "_unencoded")

    def __init__(self, entries: dict[bytes, bytes] | None = None, head: bytes = C.ZERO_HASH) -> None:
        # The hash of the last applied block: outside the root, which that block commits to.
        self.head = head
        self._decoded: dict[bytes, object] = {}  # key -> decoded record (immutable), for reads
        self._unencoded: dict[bytes, Schema] = {}  # records set but not yet encoded
        self._layers: list[dict[bytes, bytes | None]] = []
        self._top: dict[bytes, bytes | None] = {}
        self._tree = RootTree()
        for key, value in (entries or {}).items():
            self.put(key, value)

    def copy(self) -> "State":
        """A new state over this one; later writes to either do not affect the other."""
        self._flush()
        other = State.__new__(State)
        layers = self._layers + ([self._top] if self._top else [])
        if len(layers) > MAX_LAYERS:
            layers = [_merge(layers)]
        self._layers = list(layers)
        self._top = {}
        other._layers = list(layers)
        other._top = {}
        other._tree = self._tree.copy()
        other.head = self.head
        other._decoded = dict(self._decoded)
        other._unencoded = {}
        return other

    def get(self, key: bytes) -> bytes | None:
        if key in self._unencoded:
            self._flush()
        if key in self._top:
            return self._top[key]
        for layer in reversed(self._layers):
            if key in layer:
                return layer[key]
        return None

    def put(self, key: bytes, value: bytes | None) -> None:
        """Set ``key`` (``None`` deletes it)."""
        self._decoded.pop(key, None)
        self._unencoded.pop(key, None)
        self._top[key] = value
        self._tree.put(key, value)

    def put_record(self, key: bytes, record: Schema) -> None:
        """Set ``key`` to a record; it is encoded once, when bytes or the root are needed.

        A block sets the chain meta record several times; only the last is encoded.
        """
        self._unencoded[key] = record
        self._decoded[key] = record

    def _flush(self) -> None:
        if not self._unencoded:
            return
        pending, self._unencoded = self._unencoded, {}
        for key, record in pending.items():
            value = record.encode()
            self._top[key] = value
            self._tree.put(key, value)

    def changes(self) -> dict[bytes, bytes | None]:
        """Writes since the last ``copy()``: the diff a block made."""
        self._flush()
        return dict(self._top)

    def items(self, prefix: bytes = b"") -> Iterator[tuple[bytes, bytes]]:
        self._flush()
        merged = _merge(self._layers + [self._top])
        for key in sorted(merged):
            value = merged[key]
            if key.startswith(prefix) and value is not None:
                yield key, value

    @property
    def root(self) -> bytes:
        self._flush()
        return self._tree.root()


def _merge(layers: list[dict[bytes, bytes | None]]) -> dict[bytes, bytes | None]:
    merged: dict[bytes, bytes | None] = {}
    for layer in layers:
        merged.update(layer)
    return {k: v for k, v in merged.items() if v is not None}


# ---------------------------------------------------------------------------
# Typed access
# ---------------------------------------------------------------------------
def _get(state: State, key: bytes, cls: type[R]) -> R | None:
    cached = state._decoded.get(key)
    if type(cached) is cls:
        return cached  # type: ignore[return-value]
    raw = state.get(key)
    if raw is None:
        return None
    try:
        record = cls.decode(raw)
        state._decoded[key] = record
        return record
    except DecodeError as exc:  # state is written only by this module: corruption
        raise RuntimeError(f"corrupt state record {key!r}: {exc}") from exc


def get_meta(state: State) -> ChainMeta:
    meta = _get(state, KEY_META, ChainMeta)
    if meta is None:
        raise LookupError("state has no chain yet")
    return meta


def set_meta(state: State, meta: ChainMeta) -> None:
    state.put_record(KEY_META, meta)


def get_problem(state: State) -> ProblemRecord:
    rec = _get(state, KEY_PROBLEM, ProblemRecord)
    if rec is None:
        raise LookupError("state has no problem yet")
    return rec


def set_problem(state: State, record: ProblemRecord) -> None:
    state.put_record(KEY_PROBLEM, record)


def get_account(state: State, address: bytes) -> Account:
    return _get(state, PREFIX_ACCOUNT + address, Account) or EMPTY_ACCOUNT


def set_account(state: State, address: bytes, account: Account) -> None:
    if account == EMPTY_ACCOUNT:
        state.put(PREFIX_ACCOUNT + address, None)
    else:
        state.put_record(PREFIX_ACCOUNT + address, account)


def get_digest(state: State, digest: bytes) -> DigestRecord | None:
    return _get(state, PREFIX_DIGEST + digest, DigestRecord)


def set_digest(state: State, digest: bytes, record: DigestRecord) -> None:
    state.put(PREFIX_DIGEST + digest, record.encode())


def get_bond(state: State, validator: bytes) -> Bond | None:
    return _get(state, PREFIX_BOND + validator, Bond)


def set_bond(state: State, validator: bytes, bond: Bond | None) -> None:
    if bond is None:
        state.put(PREFIX_BOND + validator, None)
    else:
        state.put_record(PREFIX_BOND + validator, bond)


def get_offer(state: State, address: bytes) -> Offer | None:
    return _get(state, PREFIX_OFFER + address, Offer)


def set_offer(state: State, address: bytes, offer: Offer) -> None:
    state.put(PREFIX_OFFER + address, offer.encode())


def get_reputation(state: State, address: bytes) -> Reputation:
    return _get(state, PREFIX_REPUTATION + address, Reputation) or Reputation(0, 0, 0)


def set_reputation(state: State, address: bytes, rep: Reputation) -> None:
    state.put(PREFIX_REPUTATION + address, rep.encode())


def get_rating_mark(state: State, rater: bytes, target: bytes) -> RatingMark | None:
    return _get(state, PREFIX_RATING + rater + target, RatingMark)


def set_rating_mark(state: State, rater: bytes, target: bytes, mark: RatingMark) -> None:
    state.put(PREFIX_RATING + rater + target, mark.encode())


def get_channel(state: State, payer: bytes, runner: bytes) -> Channel | None:
    return _get(state, PREFIX_CHANNEL + payer + runner, Channel)


def set_channel(state: State, payer: bytes, runner: bytes, channel: Channel) -> None:
    state.put_record(PREFIX_CHANNEL + payer + runner, channel)


def season_improvement_key(season: int, ordinal: int) -> bytes:
    return PREFIX_SEASON_IMPROVEMENT + season.to_bytes(4, "big") + ordinal.to_bytes(4, "big")


def get_season_improvement(state: State, season: int, ordinal: int) -> SeasonImprovement:
    record = _get(state, season_improvement_key(season, ordinal), SeasonImprovement)
    if record is None:
        raise LookupError(f"season {season} has no improvement {ordinal}")
    return record


def set_season_improvement(state: State, season: int, ordinal: int, record: SeasonImprovement | None) -> None:
    key = season_improvement_key(season, ordinal)
    if record is None:
        state.put(key, None)
    else:
        state.put_record(key, record)


def get_ejection(state: State, committer: bytes) -> Ejection | None:
    return _get(state, PREFIX_EJECTED + committer, Ejection)


def is_ejected(state: State, committer: bytes) -> bool:
    return get_ejection(state, committer) is not None


def set_ejection(state: State, committer: bytes, record: Ejection) -> None:
    state.put_record(PREFIX_EJECTED + committer, record)


def get_season_reference(state: State, season: int) -> SeasonReference | None:
    return _get(state, PREFIX_SEASON_REFERENCE + season.to_bytes(4, "big"), SeasonReference)


def set_season_reference(state: State, season: int, record: SeasonReference | None) -> None:
    key = PREFIX_SEASON_REFERENCE + season.to_bytes(4, "big")
    if record is None:
        state.put(key, None)
    else:
        state.put_record(key, record)


def get_sealed_ahead(state: State, season: int) -> SealedHoldout | None:
    return _get(state, PREFIX_SEALED_AHEAD + season.to_bytes(4, "big"), SealedHoldout)


def set_sealed_ahead(state: State, season: int, holdout: SealedHoldout | None) -> None:
    key = PREFIX_SEALED_AHEAD + season.to_bytes(4, "big")
    if holdout is None:
        state.put(key, None)
    else:
        state.put_record(key, holdout)


def get_holdout_mark(state: State, value: bytes) -> HoldoutMark | None:
    return _get(state, PREFIX_HOLDOUT_MARK + value, HoldoutMark)


def set_holdout_mark(state: State, value: bytes, mark: HoldoutMark) -> None:
    state.put_record(PREFIX_HOLDOUT_MARK + value, mark)


def iter_records(state: State, prefix: bytes, cls: type[R]) -> Iterator[tuple[bytes, R]]:
    """All records under ``prefix`` (for RPC listings; O(state size))."""
    for key, raw in state.items(prefix):
        yield key[len(prefix) :], cls.decode(raw)


# Typed helpers for amounts ----------------------------------------------------
def credit(state: State, address: bytes, amount: int, *, locked: bool = False) -> None:
    """Add ``amount``; past ``MAX_AMOUNT`` (spendable and locked together) it is an invalid tx,
    never a record that cannot be encoded (which would stall whoever builds the block)."""
    acct = get_account(state, address)
    total = acct.balance + acct.locked
    if total + amount > C.MAX_AMOUNT:
        raise BalanceOverflow(address, total, amount, C.MAX_AMOUNT)
    if locked:
        acct = Account(acct.balance, acct.locked + amount, acct.nonce)
    else:
        acct = Account(acct.balance + amount, acct.locked, acct.nonce)
    set_account(state, address, acct)


def lock(state: State, address: bytes, amount: int) -> bool:
    """Move ``amount`` from spendable to locked; False if the balance is short."""
    acct = get_account(state, address)
    if acct.balance < amount:
        return False
    set_account(state, address, Account(acct.balance - amount, acct.locked + amount, acct.nonce))
    return True


def unlock(state: State, address: bytes, amount: int) -> None:
    acct = get_account(state, address)
    amount = min(amount, acct.locked)
    set_account(state, address, Account(acct.balance + amount, acct.locked - amount, acct.nonce))


def burn_locked(state: State, address: bytes, amount: int) -> int:
    """Remove up to ``amount`` of ``address``'s locked funds; return what was burned."""
    acct = get_account(state, address)
    amount = min(amount, acct.locked)
    set_account(state, address, Account(acct.balance, acct.locked - amount, acct.nonce))
    return amount

