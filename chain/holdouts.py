"""Sealing holdouts: the ``NewHoldout`` rule, the seasons sealed ahead, and opening the next one.

A contributor may seal a season's holdout at any time (issue 16): with no season open it
opens in the next period; while one runs (or waits for its reveal) it is queued under
``"n" || season index`` and opens in the block that judges (or gives up on) the season
before it, so a problem sealed K seasons ahead runs all K with no hand between them.

Every sealed holdout locks its own contributor bond, which ``validate_season_params``
keeps at or above what one season can mint: a missed reveal then repays that season's
locked holders whatever else is queued. Inputs and commitments are marked once sealed,
because a reveal publishes the labels: a holdout sealed again on either would pay a second
season for answers anyone can look up.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Final

from .errors import ContributorBondUnpaid, HoldoutReused, NoSeasons, NotContributor, TooManySeasonsSealed
from .header import BlockHeader
from .limits import check_message_sizes
from .payloads import NewHoldout
from .proofs import SealedHoldout
from .records import HoldoutMark, ProblemRecord, Season
from .state import (
    State,
    get_account,
    get_holdout_mark,
    get_meta,
    get_sealed_ahead,
    lock,
    set_holdout_mark,
    set_meta,
    set_sealed_ahead,
)

# Holdouts one chain keeps sealed ahead of its current season. Each is a state record and a
# locked bond; the cap bounds what one contributor can park in the state for seasons that
# may never run (16 seasons of a month each cover more than a year of competition).
MAX_SEALED_AHEAD: Final[int] = 16


def check_new_holdout(state: State, problem: ProblemRecord, sender: bytes, holdout: SealedHoldout) -> None:
    """The one rule a ``NewHoldout`` from ``sender`` (an address) must meet."""
    season = get_meta(state).season
    if season is None:
        raise NoSeasons()
    if sender != problem.contributor:
        raise NotContributor(sender, problem.contributor)
    for what, value in (("inputs", holdout.z_h_id), ("commitment", holdout.commitment)):
        mark = get_holdout_mark(state, value)
        if mark is not None:
            raise HoldoutReused(what, value, mark.season)
    if season.holdout is not None and season.sealed_ahead >= MAX_SEALED_AHEAD:
        raise TooManySeasonsSealed(season.sealed_ahead, MAX_SEALED_AHEAD)
    check_message_sizes(problem.params, problem.tuples, holdout.m_h)
    balance = get_account(state, sender).balance
    if balance < problem.params.contributor_bond:
        raise ContributorBondUnpaid(balance, problem.params.contributor_bond)


def mark_holdout(state: State, holdout: SealedHoldout, season: int) -> None:
    """Remember ``holdout``'s inputs and commitment as sealed for ``season``."""
    set_holdout_mark(state, holdout.z_h_id, HoldoutMark(season))
    set_holdout_mark(state, holdout.commitment, HoldoutMark(season))


def process_new_holdout(state: State, problem: ProblemRecord, sender: bytes, header: BlockHeader,
                        payload: NewHoldout) -> None:
    check_new_holdout(state, problem, sender, payload.holdout)
    lock(state, sender, problem.params.contributor_bond)
    meta = get_meta(state)
    season = meta.season
    assert season is not None  # check_new_holdout: the problem has seasons
    if season.holdout is None:  # no season open: this one opens in the next period
        index = season.index
        season = Season(index, header.period + 1, payload.holdout, 0, (), season.confirmed_error_ppb)
    else:
        index = season.index + season.sealed_ahead + 1
        set_sealed_ahead(state, index, payload.holdout)
        season = replace(season, sealed_ahead=season.sealed_ahead + 1)
    mark_holdout(state, payload.holdout, index)
    set_meta(state, replace(meta, season=season))


def next_season(state: State, closed: Season, period: int, confirmed_error_ppb: int) -> Season:
    """The season after ``closed``, judged (or given up on) in ``period``: the next one sealed
    ahead, open from the next period, or a season that waits for a ``NewHoldout``."""
    index = closed.index + 1
    if closed.sealed_ahead == 0:
        return Season(index, 0, None, 0, (), confirmed_error_ppb)
    holdout = get_sealed_ahead(state, index)
    assert holdout is not None  # sealed_ahead counts the records under index + 1 ..
    set_sealed_ahead(state, index, None)
    return Season(index, period + 1, holdout, 0, (), confirmed_error_ppb, closed.sealed_ahead - 1)

