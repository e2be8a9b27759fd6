"""Periods, committers, grace and fork choice (docs/design.md §5)."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chain.consensus import (
    IN_TURN_WEIGHT,
    OUT_OF_TURN_WEIGHT,
    ChainTip,
    better_tip,
    block_weight,
    choose_head,
    in_turn_committer,
    is_in_window,
    may_commit,
    period_end,
    period_of,
    period_start,
)
from chain.devnet import Devnet, DevnetConfig
from factories import fuzz_settings

PARAMS = Devnet(DevnetConfig(t0=1_000, t_p=100, t_b=30, grace=7, committers=3)).params
C0, C1, C2 = PARAMS.committers
STRANGER = b"\x42" * 32


def test_period_boundaries():
    assert period_of(PARAMS, 999) == -1  # before t0
    assert period_of(PARAMS, 1_000) == 0
    assert period_of(PARAMS, 1_099) == 0
    assert period_of(PARAMS, 1_100) == 1  # t0 + T_p starts period 1
    assert period_of(PARAMS, 1_129) == 1
    assert period_of(PARAMS, 1_130) == 2
    assert period_start(PARAMS, 0) == 1_000
    assert period_end(PARAMS, 0) == 1_100
    assert period_start(PARAMS, 1) == 1_100
    assert period_end(PARAMS, 1) == 1_130
    assert period_start(PARAMS, 5) == 1_100 + 4 * 30


@fuzz_settings(200)
@given(k=st.integers(0, 10**6))
def test_periods_tile_time(k):
    start, end = period_start(PARAMS, k), period_end(PARAMS, k)
    assert period_of(PARAMS, start) == k
    assert period_of(PARAMS, end - 1) == k
    assert period_of(PARAMS, end) == k + 1
    assert period_start(PARAMS, k + 1) == end


@fuzz_settings(200)
@given(t=st.integers(0, 10**10))
def test_time_lies_in_its_period(t):
    k = period_of(PARAMS, t)
    if k >= 0:
        assert period_start(PARAMS, k) <= t < period_end(PARAMS, k)


def test_in_turn_committer_rotates():
    assert [in_turn_committer(PARAMS, k) for k in range(7)] == [C0, C1, C2, C0, C1, C2, C0]


def test_may_commit_in_turn_from_period_end():
    end = period_end(PARAMS, 4)  # committers[4 % 3] = C1
    assert may_commit(PARAMS, 4, C1, end)
    assert may_commit(PARAMS, 4, C1, end + 10_000)
    # invalid timestamp: still inside period 4
    assert not may_commit(PARAMS, 4, C1, end - 1)


def test_may_commit_out_of_turn_only_after_grace():
    end = period_end(PARAMS, 4)
    for other in (C0, C2):
        # invalid: out of turn before the grace time
        assert not may_commit(PARAMS, 4, other, end)
        assert not may_commit(PARAMS, 4, other, end + PARAMS.grace - 1)
        assert may_commit(PARAMS, 4, other, end + PARAMS.grace)


def test_may_commit_never_for_a_stranger():
    end = period_end(PARAMS, 4)
    # invalid committer: not listed
    assert not may_commit(PARAMS, 4, STRANGER, end + PARAMS.grace + 10_000)


def test_problem_block_after_t_p():
    assert may_commit(PARAMS, 0, C0, PARAMS.t0 + PARAMS.t_p)
    assert not may_commit(PARAMS, 0, C0, PARAMS.t0 + PARAMS.t_p - 1)


def test_block_weight():
    assert block_weight(PARAMS, 4, C1) == IN_TURN_WEIGHT == 2 * OUT_OF_TURN_WEIGHT  # Clique's 2 : 1
    assert block_weight(PARAMS, 4, C0) == OUT_OF_TURN_WEIGHT


def test_each_skipped_period_divides_the_weight_by_four():
    for skipped in range(1, 11):  # exact while the unit 4^10 has factors of 4 left
        assert block_weight(PARAMS, 4, C1, skipped) * 4**skipped == IN_TURN_WEIGHT
        assert block_weight(PARAMS, 4, C0, skipped) * 4**skipped == OUT_OF_TURN_WEIGHT
    assert block_weight(PARAMS, 4, C0, 40) == block_weight(PARAMS, 4, C1, 40) == 1  # the floor


def test_skipping_one_more_period_never_outweighs_a_block_in_turn_or_not():
    for skipped in range(0, 10):
        assert block_weight(PARAMS, 4, C1, skipped + 1) < block_weight(PARAMS, 4, C0, skipped)


def test_gossip_window_with_drift():
    start, end = period_start(PARAMS, 3), period_end(PARAMS, 3)
    assert is_in_window(PARAMS, 3, start, 0)
    assert not is_in_window(PARAMS, 3, start - 1, 0)
    assert is_in_window(PARAMS, 3, start - 2, 2)
    assert not is_in_window(PARAMS, 3, end, 0)
    assert is_in_window(PARAMS, 3, end + 1, 2)


def test_single_committer_is_always_in_turn():
    params = dataclasses.replace(PARAMS, committers=(C0,))
    assert all(in_turn_committer(params, k) == C0 for k in range(5))
    assert may_commit(params, 9, C0, period_end(params, 9))


# ---------------------------------------------------------------------------
# Fork choice
# ---------------------------------------------------------------------------
LOW, HIGH = b"\x01" * 32, b"\x02" * 32


def test_heavier_chain_wins():
    light, heavy = ChainTip(5, LOW, 9), ChainTip(6, HIGH, 3)
    assert better_tip(light, heavy) == heavy
    assert better_tip(heavy, light) == heavy


def test_tie_keeps_the_current_head():
    a, b = ChainTip(6, LOW, 3), ChainTip(6, HIGH, 4)
    assert better_tip(a, b) is a
    assert better_tip(b, a) is b  # whichever was seen first, never the lower hash


def test_in_turn_chain_outweighs_a_longer_out_of_turn_chain():
    # two in-turn blocks (weight 4) beat three out-of-turn ones (weight 3)
    in_turn = ChainTip(2 * IN_TURN_WEIGHT, HIGH, 2)
    out_of_turn = ChainTip(3 * OUT_OF_TURN_WEIGHT, LOW, 3)
    assert better_tip(in_turn, out_of_turn) == in_turn


@fuzz_settings(100)
@given(st.lists(st.tuples(st.integers(0, 20), st.binary(min_size=32, max_size=32)), min_size=1, max_size=8))
def test_choose_head_keeps_the_first_seen_of_the_heaviest(raw):
    tips = [ChainTip(w, h, i) for i, (w, h) in enumerate(raw)]
    best = choose_head(tips)
    assert best.weight == max(t.weight for t in tips)
    assert best is next(t for t in tips if t.weight == best.weight)


def test_choose_head_needs_a_tip():
    with pytest.raises(ValueError, match="no chain tips"):
        choose_head([])
