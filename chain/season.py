"""Seasons and the sealed holdout (docs/design.md §5): rewards vest only after an exact check.

During a season of S periods, rewards of settled improvements are minted
locked. After it, the contributor opens the holdout (salt, x_h) within W
periods; each of the season's improvements, in order, vests if it beats the
reference model (the last confirmed one, or the last that vested before it) on
the *same* holdout positions, by a paired test, *and* its claimed DEL distance
agrees with its holdout error; otherwise its locked rewards burn, and the best
model and d_c roll back to the last confirmed ones. The confirmed model's
predictions on this season's ``Z_h`` travel in every PoI of the season (its
last label vector), so its voters check them like the prover's own.

Both tests allow for sampling with a z-score ``z = holdout_z_centi / 100``:

- *beats*: with ``b`` positions the model gets right and the reference wrong,
  ``c`` the other way round, over ``n`` positions that neither lists as
  ambiguous: ``b - c >= max(1, z * sqrt(b + c), margin * n - z * sqrt(b + c))``.
  The first two terms make it sound: a model no better than its reference
  passes with probability at most about ``1 - Phi(z)``, and one that answers
  the holdout exactly as the reference (a lookup table over ``Z``) has
  ``b = c = 0`` and never passes. The last makes it fair: a model truly better
  by the margin passes with probability about ``Phi(z)`` once the holdout is
  large enough that ``margin * n >= 2 z sqrt(b + c)``; below that, the gain
  a model needs to pass reliably is ``2 z sqrt(b + c) / n`` (docs/soundness.md).
- *consistent*: ``|mean d - e_h| <= r * p + z * sqrt(p (1 - p) (1/m_h + 1/m))`` with
  ``p = min(max(mean d, e_h), 1/2)``
  with ``r = consistency_ppb / 10^9``: the DEL's fidelity is relative (a random
  projection keeps distances up to a factor ``1 ± eps``), and the second term
  is the sampling spread of two error estimates on ``m_h`` and ``m`` items. A
  claimed ``d ~ 0`` with a real error of a few percent fails.

A missed window slashes the contributor's bond to the locked holders (pro
rata, up to what they had locked) and burns the locked rewards.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from math import isqrt
from typing import Sequence

import numpy as np

from del_embed.integer import error_ppb

from .constants import PPB
from .crypto import address_bytes as address_of, sha256
from .errors import InvalidSeason
from .header import BlockHeader
from .holdouts import next_season
from .proofs import PoI, Reveal, SeasonReveal
from .records import BestModel, ChainMeta, LockedReward, ProblemRecord, Season, SeasonImprovement, SeasonReference
from .rewards import improvement_reward, validator_reward
from .signing import is_valid_signature
from .state import (
    State,
    burn_locked,
    credit,
    get_meta,
    get_season_improvement,
    get_season_reference,
    set_meta,
    set_season_improvement,
    set_season_reference,
    unlock,
)
from .types import ProblemParams


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


def label_vector_sizes(problem: ProblemRecord, meta: ChainMeta) -> list[int]:
    """Lengths of a PoI's label vectors, in order: one per test tuple; with a sealed
    holdout, the model's predictions on ``Z_h``; once a model is confirmed, the
    confirmed model's predictions on the same ``Z_h``."""
    sizes = [t.m for t in problem.tuples]
    holdout = meta.season.holdout if meta.season is not None else None
    if holdout is not None:
        sizes.append(holdout.m_h)
        if meta.confirmed is not None:
            sizes.append(holdout.m_h)
    return sizes


def season_mint_bound(reward_a: int, reward_scale: int) -> int:
    """Base units one season can mint and vest: improvers at most ``scale * R(0, 1)`` in all
    (``R(d, d_c) = G(d_c) - G(d)``, so consecutive rewards telescope, and the judge pays vested
    ones against the last vested ``d``), and their validators less than as much again."""
    return 2 * improvement_reward(0, PPB, reward_a, reward_scale)


def baseline_index(poi: PoI) -> int:
    """Position of the confirmed model's holdout vector among a PoI's label vectors."""
    return len(poi.ys) + 1


def check_season_reference(state: State, meta: ChainMeta, poi: PoI, reveal: Reveal) -> str:
    """``""`` if the PoI's baseline (the confirmed model on ``Z_h``) is the season's, else why not.

    The first PoI that settles in a season fixes the baseline; it was endorsed by a
    quorum of the stake, so a later PoI that carries another one (and the votes that
    endorsed it) is false, whoever voted for it.
    """
    season = meta.season
    if season is None or season.holdout is None or meta.confirmed is None:
        return ""
    reference = get_season_reference(state, season.index)
    if reference is None:
        return ""
    i = baseline_index(poi)
    if reveal.labels[i] != reference.labels or tuple(poi.ambiguous[i]) != reference.ambiguous:
        return "baseline differs from the season's reference"
    return ""


def record_season_improvement(
    state: State,
    meta: ChainMeta,
    best: BestModel,
    reveal: Reveal,
    poi: PoI,
    improver: bytes,
    reward: int,
    paid: list[tuple[bytes, int]],
    improver_bond: int,
) -> ChainMeta:
    season = meta.season
    assert season is not None  # callers mint locked only inside a season
    own = len(poi.ys)  # the holdout vectors follow the tuples' vectors
    improvement = SeasonImprovement(
        digest=best.digest,
        owner=improver,
        settlement_height=best.height,
        d_ppb=best.d_ppb,
        holdout_labels=reveal.labels[own],
        holdout_ambiguous=tuple(a.index for a in poi.ambiguous[own]),
        reward=reward,
        voters=tuple(address for address, _ in paid),
        improver_bond=improver_bond,
    )
    set_season_improvement(state, season.index, season.improvement_count, improvement)
    if len(reveal.labels) > baseline_index(poi) and get_season_reference(state, season.index) is None:
        i = baseline_index(poi)
        set_season_reference(state, season.index, SeasonReference(reveal.labels[i], tuple(poi.ambiguous[i])))
    locked = [LockedReward(improver, reward, best.height)] + [
        LockedReward(addr, amount, best.height) for addr, amount in paid
    ]
    season = replace(
        season,
        improvement_count=season.improvement_count + 1,
        locked=season.locked + tuple(locked),
    )
    return replace(meta, season=season)


# --- the exact holdout check (pure) -----------------------------------------------------
@dataclass(frozen=True)
class HoldoutVerdict:
    """One improvement's holdout check against its reference model."""

    error_ppb: int  # e_h: the model's error on the holdout positions it did not list as ambiguous
    compared: int  # positions neither model lists as ambiguous
    gained: int  # of those, right here and wrong in the reference
    lost: int  # wrong here and right in the reference
    beats: bool
    consistent: bool

    @property
    def vests(self) -> bool:
        return self.beats and self.consistent


def _mask(size: int, positions: Sequence[int]) -> np.ndarray:
    mask = np.zeros(size, dtype=bool)
    mask[list(positions)] = True
    return mask


def holdout_verdict(
    params: ProblemParams,
    truth: bytes,
    labels: bytes,
    ambiguous: Sequence[int],
    reference: tuple[bytes, Sequence[int]] | None,
    mean_d_ppb: int,
    m_test: int,
) -> HoldoutVerdict:
    """Judge holdout predictions ``labels`` against the true ``truth`` and a reference
    model's predictions (``None``: no model yet, every position counts as wrong).

    Integer arithmetic only; ``m_test`` is the size of the test set ``d`` was measured on.
    """
    x_h = np.frombuffer(truth, dtype=np.uint8)
    pred = np.frombuffer(labels, dtype=np.uint8)
    if len(pred) != len(x_h):  # a reference of another season: cannot be compared
        return HoldoutVerdict(PPB, 0, 0, 0, False, False)
    own_mask = _mask(len(pred), ambiguous)
    e_h = error_ppb(pred, x_h, own_mask)
    right = pred == x_h
    if reference is None:
        keep = ~own_mask
        ref_right = np.zeros(len(pred), dtype=bool)
    else:
        ref = np.frombuffer(reference[0], dtype=np.uint8)
        if len(ref) != len(x_h):
            return HoldoutVerdict(e_h, 0, 0, 0, False, False)
        keep = ~(own_mask | _mask(len(ref), reference[1]))
        ref_right = ref == x_h
    n = int(keep.sum())
    gained = int((right & ~ref_right & keep).sum())
    lost = int((~right & ref_right & keep).sum())
    z = params.holdout_z_centi
    gain = gained - lost
    slack = isqrt(z * z * (gained + lost))  # 100 z sqrt(b + c): z standard deviations of b - c
    beats = gain >= 1 and 100 * gain >= slack and (100 * gain + slack) * PPB >= 100 * params.holdout_margin_ppb * n
    m_h = max(1, int((~own_mask).sum()))
    m = max(1, m_test)
    p = min(max(mean_d_ppb, e_h), PPB // 2)  # the larger error estimate: a low e_h must not shrink sigma
    spread_sq = z * z * p * (PPB - p) * (m_h + m) // (m_h * m)  # (100 z sigma)^2, sigma in ppb
    allowance = params.consistency_ppb * max(mean_d_ppb, e_h) // PPB  # the DEL's relative fidelity
    consistent = 100 * abs(mean_d_ppb - e_h) <= 100 * allowance + isqrt(spread_sq)
    return HoldoutVerdict(e_h, n, gained, lost, beats, consistent)


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
            return miss_reveal(state, problem, season, header.period)
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
    return judge_season(state, problem, meta, season, reveal.labels, header.period)


def season_improvements(state: State, season: Season) -> list[SeasonImprovement]:
    return [get_season_improvement(state, season.index, i) for i in range(season.improvement_count)]


def clear_season_improvements(state: State, season: Season) -> None:
    for i in range(season.improvement_count):
        set_season_improvement(state, season.index, i, None)
    set_season_reference(state, season.index, None)


def season_baseline(state: State, season: Season) -> tuple[bytes, Sequence[int]] | None:
    """The confirmed model's holdout labels and ambiguous positions, as the season fixed them."""
    reference = get_season_reference(state, season.index)
    if reference is None:
        return None
    return reference.labels, tuple(a.index for a in reference.ambiguous)


def reprice(state: State, params: ProblemParams, imp: SeasonImprovement, d_ref: tuple[int, ...]) -> int:
    """Pay a vested improvement and its voters what they would have had against ``d_ref``, the
    ``d`` of the last improvement that vested before it: as if burned ones had never settled.

    ``d_ref`` is at least the ``d_c`` it settled against (settled distances only fall), so
    this only adds; the difference is minted spendable. Returns what was minted."""
    rewards = [improvement_reward(d, dc, params.reward_a, params.reward_scale) for d, dc in zip(imp.d_ppb, d_ref)]
    fair = sum(rewards) // len(rewards)
    minted = max(0, fair - imp.reward)
    credit(state, imp.owner, minted)
    for position, voter in enumerate(imp.voters, start=1):
        extra = max(0, validator_reward(fair, position) - validator_reward(imp.reward, position))
        credit(state, voter, extra)
        minted += extra
    return minted


def judge_season(state: State, problem: ProblemRecord, meta: ChainMeta, season: Season, truth: bytes,
                 period: int) -> str:
    params = problem.params
    m_test = min(t.m for t in problem.tuples)
    confirmed, confirmed_d_c, confirmed_error = meta.confirmed, meta.confirmed_d_c, season.confirmed_error_ppb
    baseline = season_baseline(state, season) if confirmed is not None else None
    vested: SeasonImprovement | None = None  # the last improvement of this season that vested
    vested_heights: set[int] = set()
    minted = 0
    burned = 0
    improvements = season_improvements(state, season)
    for imp in improvements:
        if vested is not None:
            reference: tuple[bytes, Sequence[int]] | None = (vested.holdout_labels, vested.holdout_ambiguous)
        else:
            reference = baseline  # None without a confirmed model: every position counts as wrong
        mean_d = sum(imp.d_ppb) // len(imp.d_ppb)
        verdict = holdout_verdict(params, truth, imp.holdout_labels, imp.holdout_ambiguous, reference, mean_d, m_test)
        if verdict.vests:
            minted += reprice(state, params, imp, confirmed_d_c)
            unlock(state, imp.owner, imp.improver_bond)
            vested = imp
            vested_heights.add(imp.settlement_height)
            confirmed_error = verdict.error_ppb
            confirmed = BestModel(imp.digest, imp.owner, imp.settlement_height, imp.d_ppb)
            confirmed_d_c = imp.d_ppb
        else:  # a burned improvement costs its author the bond it staked on it
            burned += burn_locked(state, imp.owner, imp.improver_bond)
    clear_season_improvements(state, season)
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
        minted=meta.minted + minted,
        season=next_season(state, season, period, confirmed_error),
    ))
    return f"season {season.index} revealed: {len(vested_heights)}/{len(improvements)} improvements vested"


def miss_reveal(state: State, problem: ProblemRecord, season: Season, period: int) -> str:
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
    for imp in season_improvements(state, season):  # not the improvers' fault: their held bonds come back
        unlock(state, imp.owner, imp.improver_bond)
    clear_season_improvements(state, season)
    meta = get_meta(state)
    set_meta(state, replace(
        meta,
        provisional=meta.confirmed,
        d_c=meta.confirmed_d_c,
        burned=meta.burned + burned,
        season=next_season(state, season, period, season.confirmed_error_ppb),
    ))
    return f"season {season.index} reveal missed: contributor bond slashed ({paid} paid to locked holders)"


__all__ = [
    "HoldoutVerdict",
    "check_season_reference",
    "season_mint_bound",
    "holdout_verdict",
    "label_vector_sizes",
    "season_improvements",
    "holdout_commitment",
    "is_open_season",
    "process_season_reveal",
    "record_season_improvement",
]
