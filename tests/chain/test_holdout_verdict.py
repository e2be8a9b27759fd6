"""The exact holdout check (``chain.season.holdout_verdict``): paired counts, masks, both bounds."""

from __future__ import annotations

import dataclasses
from math import isqrt

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chain import constants as C
from chain.devnet import Devnet, DevnetConfig
from chain.season import holdout_verdict

PARAMS = Devnet(DevnetConfig(holdout_m=10)).params


def params(**changes):
    return dataclasses.replace(PARAMS, **changes)


def vec(values):
    return bytes(np.asarray(values, dtype=np.uint8))


TRUTH = vec([0, 1, 2, 3, 4, 5, 6, 7, 8, 9])


def test_paired_counts_and_union_of_masks():
    own = vec([0, 1, 2, 3, 4, 0, 0, 0, 8, 9])  # wrong at 5, 6, 7
    ref = vec([0, 0, 0, 3, 4, 5, 6, 0, 8, 0])  # wrong at 1, 2, 7, 9
    v = holdout_verdict(params(holdout_margin_ppb=0), TRUTH, own, (), (ref, ()), 300_000_000, 10)
    assert (v.compared, v.gained, v.lost) == (10, 3, 2)  # gained 1, 2, 9; lost 5, 6
    assert v.error_ppb == 300_000_000
    # position 9 ambiguous in the reference, position 5 in the model: both leave the comparison
    v = holdout_verdict(params(holdout_margin_ppb=0), TRUTH, own, (5,), (ref, (9,)), 300_000_000, 10)
    assert (v.compared, v.gained, v.lost) == (8, 2, 1)
    assert v.error_ppb == C.PPB * 2 // 9


def test_no_reference_counts_every_right_answer_as_gained():
    own = vec([0, 1, 2, 3, 4, 0, 0, 0, 8, 9])
    v = holdout_verdict(params(holdout_margin_ppb=0), TRUTH, own, (), None, 300_000_000, 10)
    assert (v.gained, v.lost) == (7, 0) and v.vests


def test_equal_answers_never_beat_even_at_zero_margin():
    own = vec([0, 1, 2, 3, 4, 0, 0, 0, 8, 9])
    v = holdout_verdict(params(holdout_margin_ppb=0), TRUTH, own, (), (own, ()), 300_000_000, 10)
    assert (v.gained, v.lost) == (0, 0) and not v.beats


def test_wrong_length_never_vests():
    own = vec([0, 1, 2, 3, 4, 0, 0, 0, 8, 9])
    assert not holdout_verdict(PARAMS, TRUTH, own, (), (own[:5], ()), 300_000_000, 10).vests
    assert not holdout_verdict(PARAMS, TRUTH, own[:5], (), None, 300_000_000, 10).vests


def beats_exactly(gained: int, lost: int, n: int, margin_ppb: int, z_centi: int) -> bool:
    gain = gained - lost
    slack = isqrt(z_centi**2 * (gained + lost))
    return gain >= 1 and 100 * gain >= slack and (100 * gain + slack) * C.PPB >= 100 * margin_ppb * n


@settings(max_examples=200, deadline=None)
@given(
    n=st.integers(20, 400), seed=st.integers(0, 2**32 - 1),
    margin=st.integers(0, 200_000_000), z=st.integers(0, 400),
)
def test_beats_follows_the_integer_rule(n, seed, margin, z):
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, 10, n)
    own = np.where(rng.random(n) < 0.2, rng.integers(0, 10, n), truth)
    ref = np.where(rng.random(n) < 0.25, rng.integers(0, 10, n), truth)
    v = holdout_verdict(params(holdout_margin_ppb=margin, holdout_z_centi=z), vec(truth), vec(own), (),
                        (vec(ref), ()), 0, n)
    gained = int(((own == truth) & (ref != truth)).sum())
    lost = int(((own != truth) & (ref == truth)).sum())
    assert (v.gained, v.lost) == (gained, lost)
    assert v.beats == beats_exactly(gained, lost, n, margin, z)


def test_the_margin_counts_with_sampling_slack():
    # n = 10,000, margin 1% -> 100 positions; b - c = 80 with b + c = 120: 80 + 2.33 * sqrt(120) = 105.5 >= 100
    assert beats_exactly(100, 20, 10_000, 10_000_000, 233)
    assert not beats_exactly(100, 20, 10_000, 10_000_000, 100)  # 80 + 10.95 < 100
    assert not beats_exactly(1, 0, 10_000, 10_000_000, 233)  # one lucky position is not 1%


def test_a_gain_within_the_noise_never_beats_even_below_the_margin():
    # margin 0.1% of 1,000 = 1 position; b - c = 20 with b + c = 100: 2.33 * 10 = 23.3 > 20 (not significant)
    assert not beats_exactly(60, 40, 1_000, 1_000_000, 233)
    assert beats_exactly(62, 38, 1_000, 1_000_000, 233)  # 24 >= 23.3


@pytest.mark.parametrize("claimed, consistent", [(300_000_000, True), (0, False), (340_000_000, True),
                                                 (350_000_000, False), (260_000_000, True), (250_000_000, False)])
def test_consistency_bound(claimed, consistent):
    rng = np.random.default_rng(1)
    n = 2000
    truth = rng.integers(0, 10, n)
    own = truth.copy()
    own[: n * 3 // 10] = (own[: n * 3 // 10] + 1) % 10  # e_h = 30%
    v = holdout_verdict(params(consistency_ppb=50_000_000), vec(truth), vec(own), (), None, claimed, 10_000)
    assert v.error_ppb == 300_000_000
    # bound: 5% of max(d, e_h) + 2.33 * sqrt(0.3 * 0.7 * (1/2000 + 1/10000)) = 5% of max + 2.62%
    # d = 34%: 4% <= 1.7% + 2.62%; d = 35%: 5% > 1.75% + 2.62%; d = 26%: 4% <= 1.5% + 2.62%; d = 25%: 5% > 4.12%
    assert v.consistent is consistent
