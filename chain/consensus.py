"""Periods, committers and fork choice (docs/design.md §5). Pure functions of their arguments.

Period 0 is ``[t0, t0 + T_p)``; competition period ``k >= 1`` is
``[t0 + T_p + (k-1) T_b, t0 + T_p + k T_b)``. Block ``k`` may be committed once
period ``k`` has ended: by ``committers[k mod N]`` at once, by any listed
committer after the grace time. Weight is 2 units for an in-turn block and 1 for
an out-of-turn one (Clique), divided by 4 for each period the block skips, so a
block that skips a period weighs less than any block that does not; the
heaviest chain wins and a tie keeps the head seen first (never a value the
block's author can grind, such as its hash).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Sequence

from .errors import CommitterNotAllowed
from .types import ProblemParams
from .header import BlockHeader

# A weight unit of 4^10: a skipped period divides a block's weight by 4, exactly, for up to
# 10 skipped periods; past that every block weighs the floor of 1 and ties keep the first seen.
SKIP_DIVISOR_LOG2: Final[int] = 2
WEIGHT_UNIT: Final[int] = 1 << (SKIP_DIVISOR_LOG2 * 10)
IN_TURN_WEIGHT: Final[int] = 2 * WEIGHT_UNIT
OUT_OF_TURN_WEIGHT: Final[int] = WEIGHT_UNIT
MIN_BLOCK_WEIGHT: Final[int] = 1


def period_start(params: ProblemParams, k: int) -> int:
    if k <= 0:
        return params.t0
    return params.t0 + params.t_p + (k - 1) * params.t_b


def period_end(params: ProblemParams, k: int) -> int:
    return period_start(params, k + 1)


def period_of(params: ProblemParams, t: int) -> int:
    """The period holding time ``t`` (-1 before ``t0``)."""
    if t < params.t0:
        return -1
    since = t - params.t0 - params.t_p
    if since < 0:
        return 0
    return 1 + since // params.t_b


def in_turn_committer(params: ProblemParams, k: int, committers: Sequence[bytes] | None = None) -> bytes:
    """``committers[k mod N]`` over the set in force at ``k`` (the proposal's list when not given)."""
    members = params.committers if committers is None else committers
    return members[k % len(members)]


def is_in_turn(params: ProblemParams, k: int, committer: bytes, committers: Sequence[bytes] | None = None) -> bool:
    return in_turn_committer(params, k, committers) == committer


def may_commit(params: ProblemParams, k: int, committer: bytes, timestamp: int,
               committers: Sequence[bytes] | None = None) -> bool:
    """Whether ``committer`` may sign block ``k`` stamped ``timestamp``; ``committers`` is the
    set in force at ``k`` (``chain.committers.committers_at``), the proposal's list if None."""
    if committer not in (params.committers if committers is None else committers):
        return False
    end = period_end(params, k)
    if timestamp < end:
        return False
    return is_in_turn(params, k, committer, committers) or timestamp >= end + params.grace


def check_committer_rule(params: ProblemParams, header: BlockHeader, committers: tuple[bytes, ...] | None = None) -> None:
    """A committer of the set in force at the header's period (``committers``; the proposal's list
    for a fixed set), in turn from the period's end, or any of them after the grace."""
    if not may_commit(params, header.period, header.committer, header.timestamp, committers):
        raise CommitterNotAllowed(header.committer, header.period, header.timestamp)


def block_weight(params: ProblemParams, k: int, committer: bytes, skipped: int = 0,
                 committers: Sequence[bytes] | None = None) -> int:
    """Weight of block ``k`` whose parent is ``skipped + 1`` periods older.

    Dividing by 4 per skipped period makes an in-turn block that skips (at most half a
    unit) lighter than an out-of-turn block that does not (one unit), and an in-turn
    block that skips ``s + 1`` periods lighter than an out-of-turn one that skips ``s``:
    whoever skips the previous period never out-weighs the block it would orphan.
    """
    base = IN_TURN_WEIGHT if is_in_turn(params, k, committer, committers) else OUT_OF_TURN_WEIGHT
    return max(MIN_BLOCK_WEIGHT, base >> (SKIP_DIVISOR_LOG2 * skipped))


def skipped_periods(period: int, parent_period: int | None) -> int:
    """Periods between a block and its parent with no block (0 for the Problem block)."""
    return 0 if parent_period is None else period - parent_period - 1


def is_in_window(params: ProblemParams, k: int, t: int, drift: int) -> bool:
    """Whether gossip for period ``k`` is acceptable at local time ``t`` (with clock drift)."""
    return period_start(params, k) - drift <= t < period_end(params, k) + drift


@dataclass(frozen=True)
class ChainTip:
    """What fork choice compares: total weight and head hash."""

    weight: int
    head: bytes
    height: int


def better_tip(current: ChainTip, candidate: ChainTip) -> ChainTip:
    """Heaviest wins; at equal weight ``current`` (the head seen first) stays.

    A hash tie-break would hand the tie to whoever grinds its block's hash (its
    timestamp is free): the next committer could replace the previous block, or a
    committer its own (issue 14). First-seen keeps what the node already follows, as
    BABE keeps the current best; the next in-turn block breaks the tie for everyone.
    """
    return candidate if candidate.weight > current.weight else current


def choose_head(tips: Sequence[ChainTip]) -> ChainTip:
    """The heaviest of ``tips``, listed in the order they were seen (ties keep the earliest)."""
    if not tips:
        raise ValueError("no chain tips to choose from")
    best = tips[0]
    for tip in tips[1:]:
        best = better_tip(best, tip)
    return best
