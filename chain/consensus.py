"""Periods, committers and fork choice (DESIGN §5). Pure functions of their arguments.

Period 0 is ``[t0, t0 + T_p)``; competition period ``k >= 1`` is
``[t0 + T_p + (k-1) T_b, t0 + T_p + k T_b)``. Block ``k`` may be committed once
period ``k`` has ended: by ``committers[k mod N]`` at once, by any listed
committer after the grace time. Weight is 2 for an in-turn block and 1 for an
out-of-turn one; the heaviest chain wins, ties by the lowest head hash (Clique).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Sequence

from .types import ProblemParams

IN_TURN_WEIGHT: Final[int] = 2
OUT_OF_TURN_WEIGHT: Final[int] = 1


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


def in_turn_committer(params: ProblemParams, k: int) -> bytes:
    return params.committers[k % len(params.committers)]


def is_in_turn(params: ProblemParams, k: int, committer: bytes) -> bool:
    return in_turn_committer(params, k) == committer


def may_commit(params: ProblemParams, k: int, committer: bytes, timestamp: int) -> bool:
    """Whether ``committer`` may sign block ``k`` stamped ``timestamp``."""
    if committer not in params.committers:
        return False
    end = period_end(params, k)
    if timestamp < end:
        return False
    return is_in_turn(params, k, committer) or timestamp >= end + params.grace


def block_weight(params: ProblemParams, k: int, committer: bytes) -> int:
    return IN_TURN_WEIGHT if is_in_turn(params, k, committer) else OUT_OF_TURN_WEIGHT


def is_in_window(params: ProblemParams, k: int, t: int, drift: int) -> bool:
    """Whether gossip for period ``k`` is acceptable at local time ``t`` (with clock drift)."""
    return period_start(params, k) - drift <= t < period_end(params, k) + drift


@dataclass(frozen=True)
class ChainTip:
    """What fork choice compares: total weight and head hash."""

    weight: int
    head: bytes
    height: int


def better_tip(a: ChainTip, b: ChainTip) -> ChainTip:
    """Heaviest wins; equal weight goes to the lowest head hash."""
    if a.weight != b.weight:
        return a if a.weight > b.weight else b
    return a if a.head <= b.head else b


def choose_head(tips: Sequence[ChainTip]) -> ChainTip:
    if not tips:
        raise ValueError("no chain tips to choose from")
    best = tips[0]
    for tip in tips[1:]:
        best = better_tip(best, tip)
    return best
