"""Seasons and the sealed holdout (DESIGN §5): rewards vest only after an exact check.

During a season of S periods, rewards of settled improvements are minted
locked. After it, the contributor opens the holdout (salt, x_h) within W
periods; each of the season's improvements vests if its exact holdout error
beats the last confirmed model's by the margin *and* agrees with its claimed
DEL distance, otherwise its locked rewards burn and the best model and d_c
roll back to the last confirmed ones. A missed window slashes the contributor's
bond to the locked holders (pro rata, up to what they had locked) and burns the
locked rewards.
"""

from __future__ import annotations

from dataclasses import replace
import numpy as np

from del_embed.integer import error_ppb

from .crypto import address_bytes as address_of, sha256
from .errors import InvalidSeason, InvalidTransaction
from .signing import is_valid_signature
from .state import (
    BestModel,
    ChainMeta,
    LockedReward,
    ProblemRecord,
    Season,
    SeasonImprovement,
    State,
    burn_locked,
    credit,
    get_meta,
    lock,
    set_meta,
    unlock,
)
from .types import BlockHeader, NewHoldout, PoI, Reveal, SeasonReveal


def holdout_commitment(salt: bytes, labels: bytes) -> bytes:
    """``H(salt || canonical(x_h))``; labels are one byte each."""
    return sha256(b"daimon/holdout/v1" + len(salt).to_bytes(1, "big") + salt + labels)


def season_end(season: Season, params_season_periods: int) -> int:
    """First period after the season's competition periods."""
    return season.start_period + params_season_periods


def is_open_season(meta: ChainMeta, period: int, season_periods: int) -> bool:
    """Whether a PoI may be anchored in ``period`` (always true without seasons)."""
    season = meta.season
    if season is None:
        return True
    return season.holdout is not None and period < season_end(season, season_periods)


def record_season_improvement(
    meta: ChainMeta,
    best: BestModel,
    reveal: Reveal,
    poi: PoI,
    improver: bytes,
    reward: int,
    paid: list[tuple[bytes, int]],
) -> ChainMeta:
    season = meta.season
    assert season is not None  # callers mint locked only inside a season
    improvement = SeasonImprovement(
        digest=best.digest,
        owner=improver,
        settlement_height=best.height,
        d_ppb=best.d_ppb,
        holdout_labels=reveal.labels[-1],
        holdout_ambiguous=tuple(a.index for a in poi.ambiguous[-1]),
    )
    locked = [LockedReward(improver, reward, best.height)] + [
        LockedReward(addr, amount, best.height) for addr, amount in paid
    ]
    season = replace(
        season,
        improvements=season.improvements + (improvement,),
        locked=season.locked + tuple(locked),
    )
    return replace(meta, season=season)


def process_new_holdout(state: State, problem: ProblemRecord, sender: bytes, header: BlockHeader, payload: NewHoldout) -> None:
    meta = get_meta(state)
    season = meta.season
    if season is None:
        raise InvalidTransaction("this problem has no seasons")
    if sender != problem.contributor:
        raise InvalidTransaction("only the contributor seals a holdout", sender=sender)
    if season.holdout is not None:
        raise InvalidTransaction("the season already has a sealed holdout")
    if not lock(state, sender, problem.params.contributor_bond):
        raise InvalidTransaction("balance below the contributor bond", bond=problem.params.contributor_bond)
    season = Season(season.index, header.period + 1, payload.holdout, (), (), season.confirmed_error_ppb)
    set_meta(state, replace(get_meta(state), season=season))


def process_season_reveal(state: State, problem: ProblemRecord, header: BlockHeader, reveal: SeasonReveal | None) -> str:
    """Vest or burn the season's rewards; returns a short note of what happened."""
    meta = get_meta(state)
    season = meta.season
    params = problem.params
    if season is None or season.holdout is None:
        if reveal is not None:
            raise InvalidSeason("no sealed holdout to reveal")
        return ""
    end = season_end(season, params.season_periods)
    if reveal is None:
        if header.period >= end + params.reveal_window:
            return miss_reveal(state, problem, meta, season)
        return ""
    # Verify the reveal
    if not end <= header.period < end + params.reveal_window:
        raise InvalidSeason("holdout reveal outside its window", period=header.period, window_start=end)
    if reveal.chain_id != problem.chain_id or reveal.season != season.index:
        raise InvalidSeason("reveal for another chain or season", season=reveal.season)
    if address_of(reveal.contributor) != problem.contributor:
        raise InvalidSeason("reveal not by the contributor")
    if not is_valid_signature(reveal, problem.chain_id):
        raise InvalidSeason("bad holdout reveal signature")
    if len(reveal.labels) != season.holdout.m_h or (reveal.labels and max(reveal.labels) >= params.num_classes):
        raise InvalidSeason("holdout labels of the wrong size or range", size=len(reveal.labels))
    if holdout_commitment(reveal.salt, reveal.labels) != season.holdout.commitment:
        raise InvalidSeason("salt and labels do not open the commitment")
    return judge_season(state, problem, meta, season, reveal.labels)


def judge_season(state: State, problem: ProblemRecord, meta: ChainMeta, season: Season, truth: bytes) -> str:
    params = problem.params
    x_h = np.frombuffer(truth, dtype=np.uint8)
    confirmed, confirmed_d_c, baseline = meta.confirmed, meta.confirmed_d_c, season.confirmed_error_ppb
    vested_heights: set[int] = set()
    for imp in season.improvements:
        pred = np.frombuffer(imp.holdout_labels, dtype=np.uint8)
        mask = np.zeros(len(pred), dtype=bool)
        mask[list(imp.holdout_ambiguous)] = True
        e_h = error_ppb(pred, x_h, mask)
        mean_d = sum(imp.d_ppb) // len(imp.d_ppb)
        beats = e_h + params.holdout_margin_ppb < baseline
        consistent = abs(mean_d - e_h) <= params.consistency_ppb
        if beats and consistent:
            vested_heights.add(imp.settlement_height)
            baseline = e_h
            confirmed = BestModel(imp.digest, imp.owner, imp.settlement_height, imp.d_ppb)
            confirmed_d_c = imp.d_ppb
    burned = 0
    for entry in season.locked:
        if entry.settlement_height in vested_heights:
            unlock(state, entry.address, entry.amount)
        else:
            burned += burn_locked(state, entry.address, entry.amount)
    unlock(state, problem.contributor, params.contributor_bond)
    meta = get_meta(state)
    set_meta(state, replace(
        meta,
        confirmed=confirmed,
        confirmed_d_c=confirmed_d_c,
        provisional=confirmed,
        d_c=confirmed_d_c,
        burned=meta.burned + burned,
        season=Season(season.index + 1, 0, None, (), (), baseline),
    ))
    return f"season {season.index} revealed: {len(vested_heights)}/{len(season.improvements)} improvements vested"


def miss_reveal(state: State, problem: ProblemRecord, meta: ChainMeta, season: Season) -> str:
    """Slash the contributor's bond to the locked holders; burn the locked rewards; roll back."""
    bond = burn_locked(state, problem.contributor, problem.params.contributor_bond)
    total_locked = sum(e.amount for e in season.locked)
    paid = 0
    burned = 0
    for entry in season.locked:
        burned += burn_locked(state, entry.address, entry.amount)
        if total_locked:
            share = min(entry.amount, bond * entry.amount // total_locked)
            credit(state, entry.address, share)
            paid += share
    burned += bond - paid
    meta = get_meta(state)
    set_meta(state, replace(
        meta,
        provisional=meta.confirmed,
        d_c=meta.confirmed_d_c,
        burned=meta.burned + burned,
        season=Season(season.index + 1, 0, None, (), (), season.confirmed_error_ppb),
    ))
    return f"season {season.index} reveal missed: contributor bond slashed ({paid} paid to locked holders)"


__all__ = [
    "holdout_commitment",
    "is_open_season",
    "process_new_holdout",
    "process_season_reveal",
    "record_season_improvement",
]
