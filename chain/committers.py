"""The committer set of a problem: fixed in its proposal, or bonded and changed by transactions (issue 17).

A problem with ``committer_bond == 0`` and ``committer_miss_limit == 0`` keeps the
proposal's list for good, and nothing here writes to its state. Otherwise the list is
the genesis set (members with no bond) and the state holds:

- a ``CommitterRecord`` per key that ever was a committer (``"k" || key``): its bond, its
  in-turn slots filled out of turn in a row, and the period it left the set. A record is
  never deleted, so a key registers once.
- the ``CommitterSchedule`` (``"K"``): versions ``(from_period, members)``; the set in
  force at period ``k`` is the last version with ``from_period <= k``, and the in-turn
  committer is ``members[k mod N]``.

Every change a block of period ``p`` makes (a registration, a leave, a removal for
missed turns, an ejection) takes effect at period ``p + D`` (``committer_delay``). So the
state after any block of period ``p`` fixes the set of every period up to ``p + D``: a
node can check a header for period ``k`` against the state of any ancestor at most ``D``
periods older, e.g. the common ancestor of a side block and its own head.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Final

from . import constants as C
from .codec import ListOf, Schema, Struct, schema
from .crypto import address_bytes as address_of
from .errors import (
    CommitterAlreadyRegistered,
    CommitterBondLocked,
    CommitterBondUnpaid,
    CommitterParamsOutOfRange,
    CommitterSetFixed,
    CommitterSetFull,
    LastCommitter,
    NotACommitter,
)
from .fields import AMOUNT, PUBKEY, U32, U8
from .state import State, _get, burn_locked, get_account, get_meta, lock, set_meta, unlock
from .types import ProblemParams

PREFIX_COMMITTER: Final[bytes] = b"k"  # + public key -> CommitterRecord
KEY_SCHEDULE: Final[bytes] = b"K"

# Why a committer is out of the set (CommitterRecord.exit)
STAYING: Final[int] = 0
LEFT: Final[int] = 1
REMOVED_FOR_MISSES: Final[int] = 2
EJECTED: Final[int] = 3
EXIT_NAMES: Final[dict[int, str]] = {STAYING: "staying", LEFT: "left", REMOVED_FOR_MISSES: "removed for misses",
                                     EJECTED: "ejected"}


@schema
@dataclass(frozen=True)
class CommitterRecord(Schema):
    bond: int  # locked base units still to return (0 for a genesis member, and once returned)
    misses: int  # its in-turn slots filled out of turn in a row
    until: int  # 0 while it stays; else the first period it is out of the set
    exit: int  # STAYING, LEFT, REMOVED_FOR_MISSES or EJECTED

    FIELDS = (("bond", AMOUNT), ("misses", U32), ("until", U32), ("exit", U8))


@schema
@dataclass(frozen=True)
class CommitterVersion(Schema):
    from_period: int
    members: tuple[bytes, ...]  # in rotation order: genesis order, then order of registration

    FIELDS = (("from_period", U32), ("members", ListOf(PUBKEY, C.MAX_COMMITTERS)))


@schema
@dataclass(frozen=True)
class CommitterSchedule(Schema):
    versions: tuple[CommitterVersion, ...]  # by from_period, increasing

    FIELDS = (("versions", ListOf(Struct(CommitterVersion), C.MAX_COMMITTER_VERSIONS)),)


class ScheduleTooOld(LookupError):
    """The state no longer holds the version in force at that period (pruned): read an older state."""


# ---------------------------------------------------------------------------
# Reading the set
# ---------------------------------------------------------------------------
def is_fixed_set(params: ProblemParams) -> bool:
    """The proposal's list is the set for good: no bond to register with, no removal for misses."""
    return params.committer_bond == 0 and params.committer_miss_limit == 0


def get_record(state: State, committer: bytes) -> CommitterRecord | None:
    return _get(state, PREFIX_COMMITTER + committer, CommitterRecord)


def set_record(state: State, committer: bytes, record: CommitterRecord) -> None:
    state.put_record(PREFIX_COMMITTER + committer, record)


def get_schedule(state: State) -> CommitterSchedule:
    schedule = _get(state, KEY_SCHEDULE, CommitterSchedule)
    if schedule is None:
        raise LookupError("state has no committer schedule")
    return schedule


def set_schedule(state: State, schedule: CommitterSchedule) -> None:
    state.put_record(KEY_SCHEDULE, schedule)


def version_at(schedule: CommitterSchedule, k: int) -> CommitterVersion:
    """The version in force at period ``k``; ``ScheduleTooOld`` if it was pruned."""
    found = None
    for version in schedule.versions:
        if version.from_period > k:
            break
        found = version
    if found is None:
        raise ScheduleTooOld(k)
    return found


def covers(state: State, params: ProblemParams, k: int) -> bool:
    """Whether ``state`` still holds the set in force at period ``k``."""
    if is_fixed_set(params):
        return True
    versions = get_schedule(state).versions
    return bool(versions) and versions[0].from_period <= k


def committers_at(state: State, params: ProblemParams, k: int) -> tuple[bytes, ...]:
    """The set in force at period ``k`` on the branch whose state is ``state``.

    Exact for any ``k`` up to the state's period + D, and beyond it while no block is
    added (a block of period ``p`` changes only periods ``>= p + D``).
    """
    if is_fixed_set(params):
        return params.committers
    return version_at(get_schedule(state), k).members


def is_committer_key(state: State, params: ProblemParams, committer: bytes) -> bool:
    """Whether ``committer`` ever held a place on this chain (a listed key, or one with a record)."""
    if is_fixed_set(params):
        return committer in params.committers
    return get_record(state, committer) is not None


# ---------------------------------------------------------------------------
# Changing the set: every change a block of period p makes takes effect at p + D
# ---------------------------------------------------------------------------
def init_committers(state: State, params: ProblemParams) -> None:
    """The genesis set: the proposal's list, with no bond (trusted by the problem's creator, as
    Clique's genesis signers are)."""
    if is_fixed_set(params):
        return
    for key in params.committers:
        set_record(state, key, CommitterRecord(0, 0, 0, STAYING))
    set_schedule(state, CommitterSchedule((CommitterVersion(0, params.committers),)))


def schedule_change(state: State, params: ProblemParams, period: int, *, add: bytes | None = None,
                    remove: bytes | None = None) -> None:
    """Add or remove a key in every version from ``period + D`` on, and prune versions no
    longer in force ``D`` periods back."""
    effective = period + params.committer_delay
    versions = list(get_schedule(state).versions)
    if not any(v.from_period == effective for v in versions):
        current = version_at(CommitterSchedule(tuple(versions)), effective)
        versions.append(CommitterVersion(effective, current.members))
        versions.sort(key=lambda v: v.from_period)
    changed = []
    for version in versions:
        if version.from_period >= effective:
            members = tuple(m for m in version.members if m != remove)
            if add is not None and add not in members:
                members = (*members, add)
            version = replace(version, members=members)
        changed.append(version)
    set_schedule(state, CommitterSchedule(tuple(prune(changed, period - params.committer_delay))))


def prune(versions: list[CommitterVersion], oldest_needed: int) -> list[CommitterVersion]:
    """Drop versions superseded at or before ``oldest_needed``."""
    keep_from = 0
    for i, version in enumerate(versions):
        if version.from_period <= oldest_needed:
            keep_from = i
    return versions[keep_from:]


def check_register(state: State, params: ProblemParams, committer: bytes, period: int) -> None:
    """The rules of ``RegisterCommitter`` (the pool and the committer call this)."""
    if params.committer_bond == 0:
        raise CommitterSetFixed("RegisterCommitter")
    if get_record(state, committer) is not None:
        raise CommitterAlreadyRegistered(committer)
    size = len(committers_at(state, params, period + params.committer_delay))
    if size >= C.MAX_COMMITTERS:
        raise CommitterSetFull(size, C.MAX_COMMITTERS)
    balance = get_account(state, address_of(committer)).balance
    if balance < params.committer_bond:
        raise CommitterBondUnpaid(committer, balance, params.committer_bond)


def process_register_committer(state: State, params: ProblemParams, committer: bytes, period: int) -> None:
    check_register(state, params, committer, period)
    lock(state, address_of(committer), params.committer_bond)
    set_record(state, committer, CommitterRecord(params.committer_bond, 0, 0, STAYING))
    schedule_change(state, params, period, add=committer)


def bond_available_period(params: ProblemParams, record: CommitterRecord) -> int:
    """A leaver's bond comes back D periods after it left the set: its last blocks can be reported till then."""
    return record.until + params.committer_delay


def process_leave_committer(state: State, params: ProblemParams, committer: bytes, period: int) -> None:
    """First call: leave at ``period + D``. Later call: return the bond once it is available."""
    if params.committer_bond == 0:
        raise CommitterSetFixed("LeaveCommitter")
    record = get_record(state, committer)
    if record is None or (record.until != 0 and record.bond == 0):
        raise NotACommitter(committer)
    if record.until == 0:
        remaining = committers_at(state, params, period + params.committer_delay)
        if all(m == committer for m in remaining):
            raise LastCommitter(committer, period)
        set_record(state, committer, replace(record, until=period + params.committer_delay, exit=LEFT))
        schedule_change(state, params, period, remove=committer)
        return
    available = bond_available_period(params, record)
    if period < available:
        raise CommitterBondLocked(committer, available, period)
    unlock(state, address_of(committer), record.bond)
    set_record(state, committer, replace(record, bond=0))


def process_turn(state: State, params: ProblemParams, period: int, committer: bytes) -> int:
    """Count the in-turn committer's miss when ``committer`` filled its slot; remove it at the limit.

    A period with no block counts for nobody (a committer skips a period with nothing to
    do); a slot filled out of turn after the grace is a miss. Returns the bond burned.
    """
    if is_fixed_set(params):
        return 0
    members = committers_at(state, params, period)
    in_turn = members[period % len(members)]
    record = get_record(state, in_turn)
    if record is None:  # cannot happen: every member has a record
        return 0
    if committer == in_turn:
        if record.misses:
            set_record(state, in_turn, replace(record, misses=0))
        return 0
    record = replace(record, misses=record.misses + 1)
    limit = params.committer_miss_limit
    if limit == 0 or record.misses < limit or record.until != 0:
        set_record(state, in_turn, record)
        return 0
    if all(m == in_turn for m in committers_at(state, params, period + params.committer_delay)):
        set_record(state, in_turn, record)  # never remove the last committer: the chain would stop
        return 0
    burned = burn_locked(state, address_of(in_turn), record.bond // C.COMMITTER_MISS_BURN_DIVISOR)
    set_record(state, in_turn, replace(record, bond=record.bond - burned, until=period + params.committer_delay,
                                       exit=REMOVED_FOR_MISSES))
    schedule_change(state, params, period, remove=in_turn)
    add_burned(state, burned)
    return burned


def eject_committer(state: State, params: ProblemParams, committer: bytes, period: int) -> int:
    """An equivocating committer's bond burns in full and it leaves the set at ``period + D``."""
    if is_fixed_set(params):
        return 0
    record = get_record(state, committer)
    if record is None:
        return 0
    burned = burn_locked(state, address_of(committer), record.bond)
    add_burned(state, burned)
    if record.until == 0:
        record = replace(record, until=period + params.committer_delay, exit=EJECTED)
        schedule_change(state, params, period, remove=committer)
    set_record(state, committer, replace(record, bond=0))
    return burned


def add_burned(state: State, amount: int) -> None:
    if amount:
        meta = get_meta(state)
        set_meta(state, replace(meta, burned=meta.burned + amount))


def validate_committer_params(params: ProblemParams) -> None:
    if is_fixed_set(params):
        return
    if not 1 <= params.committer_delay <= C.MAX_COMMITTER_DELAY:
        raise CommitterParamsOutOfRange(params.committer_delay, C.MAX_COMMITTER_DELAY)
