"""Rewards: the exact decimal path against mpmath at 60 digits and against scipy."""

from __future__ import annotations

import mpmath
import pytest
import scipy.special
from hypothesis import assume, example, given
from hypothesis import strategies as st

from chain.rewards import PPB, improvement_reward, incomplete_beta_half, validator_reward
from factories import fuzz_settings

DISTANCE = st.integers(0, PPB)
A = st.integers(1, 10)
SCALE = st.integers(1, 10**18) | st.just(10**18) | st.sampled_from([10**k for k in range(0, 19)])


def mp_reward(d_ppb: int, dc_ppb: int, a: int, scale: int) -> mpmath.mpf:
    """scale * (I_{1-d}(a, 1/2) - I_{1-d_c}(a, 1/2)), regularized, at 60 digits."""
    with mpmath.workdps(60):
        one = mpmath.mpf(1)
        x = one - mpmath.mpf(d_ppb) / PPB
        xc = one - mpmath.mpf(dc_ppb) / PPB
        half = mpmath.mpf(1) / 2
        ix = mpmath.betainc(a, half, 0, x, regularized=True)
        ixc = mpmath.betainc(a, half, 0, xc, regularized=True)
        return scale * (ix - ixc)


@fuzz_settings(150)
@given(d=DISTANCE, dc=DISTANCE, a=A, scale=SCALE)
@example(d=0, dc=PPB, a=1, scale=10**18)
@example(d=0, dc=PPB, a=10, scale=10**18)
@example(d=1, dc=PPB, a=10, scale=10**18)
@example(d=PPB - 1, dc=PPB, a=1, scale=10**18)
@example(d=499_999_999, dc=500_000_000, a=3, scale=10**18)
@example(d=0, dc=1, a=10, scale=10**18)
def test_improvement_reward_is_the_floor_of_mpmath(d, dc, a, scale):
    got = improvement_reward(d, dc, a, scale)
    if d >= dc:
        assert got == 0
        return
    with mpmath.workdps(60):
        exact = mpmath.floor(mp_reward(d, dc, a, scale))
        assert abs(got - int(exact)) <= 1


@fuzz_settings(150)
@given(d=DISTANCE, dc=DISTANCE, a=A, scale=SCALE)
def test_improvement_reward_agrees_with_scipy(d, dc, a, scale):
    # I_{1-d}(a, 1/2) = 1 - I_d(1/2, a): evaluating at d keeps the double's input exact to 1e-16
    # relative (1 - d/PPB would lose d's low digits where I is steep).
    value = scipy.special.betainc(0.5, a, dc / PPB) - scipy.special.betainc(0.5, a, d / PPB)
    # scipy is a double: compare where the difference is not lost to cancellation
    assume(value > 1e-2)
    got = improvement_reward(d, dc, a, scale)
    assert got == pytest.approx(scale * value, rel=1e-12, abs=1)  # abs: the floor


@fuzz_settings(100)
@given(x=DISTANCE, a=A)
def test_incomplete_beta_matches_mpmath(x, a):
    with mpmath.workdps(60):
        expected = mpmath.betainc(a, mpmath.mpf(1) / 2, 0, mpmath.mpf(x) / PPB, regularized=True)
        got = mpmath.mpf(str(incomplete_beta_half(x, a)))
        assert abs(got - expected) < mpmath.mpf(10) ** -50


@fuzz_settings(100)
@given(d=DISTANCE, dc=DISTANCE, a=A, scale=SCALE)
def test_improvement_reward_is_zero_unless_d_beats_dc(d, dc, a, scale):
    assume(d >= dc)
    assert improvement_reward(d, dc, a, scale) == 0


@fuzz_settings(100)
@given(d1=DISTANCE, d2=DISTANCE, dc=DISTANCE, a=A)
def test_improvement_reward_is_monotone(d1, d2, dc, a):
    lo, hi = sorted((d1, d2))
    assert improvement_reward(lo, dc, a, 10**18) >= improvement_reward(hi, dc, a, 10**18)


def test_full_improvement_pays_the_whole_scale():
    # from d_c = 1 to d = 0 the reward is I_1 - I_0 = 1
    for a in range(1, 11):
        assert improvement_reward(0, PPB, a, 10**18) == 10**18


def test_zero_scale_pays_nothing():
    assert improvement_reward(0, PPB, 3, 0) == 0


@pytest.mark.parametrize(
    "args",
    [
        (-1, PPB, 3, 1),  # invalid d below 0
        (0, PPB + 1, 3, 1),  # invalid d_c above 1
        (0, PPB, 0, 1),  # invalid a
        (0, PPB, 65, 1),  # invalid a above MAX_A
        (0, PPB, 3, -1),  # invalid scale
        (0, PPB, 3, 10**31),  # invalid scale above MAX_SCALE
        (0.5, PPB, 3, 1),  # invalid float distance
    ],
)
def test_invalid_reward_arguments(args):
    with pytest.raises(ValueError, match="outside"):
        improvement_reward(*args)


@fuzz_settings(200)
@given(reward=st.integers(0, 10**30), position=st.integers(1, 300))
def test_validator_reward_halves_per_position(reward, position):
    got = validator_reward(reward, position)
    assert got == reward // 2**position
    if position > 1:
        assert got == validator_reward(reward, position - 1) // 2


def test_validator_reward_first_positions():
    assert [validator_reward(1000, s) for s in (1, 2, 3, 4)] == [500, 250, 125, 62]


def test_invalid_validator_position():
    with pytest.raises(ValueError, match="position 0 must be >= 1"):
        validator_reward(1000, 0)
    with pytest.raises(ValueError, match="must be >= 0"):
        validator_reward(-1, 1)
