"""Evaluation on f_int, the baseline, the attacks and the paper's figure formulas."""

from __future__ import annotations

import numpy as np
import pytest

from del_embed.attack import (
    PAPER_FIG3,
    Target,
    attack,
    brute_force_p,
    brute_force_p_hyp2f1,
    cap_fraction_integral,
    nearby_start,
)
from del_embed.baseline import RandomProjection
from del_embed.evaluate import BANDS, evaluate_del, f_int_changes, make_eval_set
from del_embed.integer import PPB, distance_ppb, f_int


def test_f_int_changes_is_bit_identical_to_f_int(trained, x_t):
    art, _ = trained
    band = make_eval_set(x_t, 10, 6, seed=3)[1]
    ys = f_int_changes(art.integer, x_t, band.a)
    assert ys == [f_int(art.integer, band.a.apply(x_t, s)) for s in range(6)]


def test_eval_set_pairs_are_half_a_point_apart_inside_their_band():
    x_t = np.random.default_rng(0).integers(0, 10, size=2000)
    for band, (_, lo, hi) in zip(make_eval_set(x_t, 10, 50, seed=1), BANDS):
        np.testing.assert_allclose(band.b.errors - band.a.errors, 0.005)
        assert band.a.errors.min() >= lo and band.b.errors.max() < hi


def test_evaluate_report_shape_and_trained_beats_chance(trained, x_t):
    art, _ = trained
    rep = evaluate_del(art.integer, x_t, pairs_per_band=40)
    assert {"mae", "pearson", "ranking_accuracy", "baseline", "bands"} <= rep.keys()
    assert set(rep["bands"]) == {"0-5%", "5-20%", "20-90%"}
    for per in rep["bands"].values():
        assert {"del", "baseline"} == set(per)
    assert rep["pearson"] > 0.9  # a tiny DEL already orders errors across the bands


def test_baseline_tracks_error_by_johnson_lindenstrauss():
    x_t = np.random.default_rng(1).integers(0, 10, size=1000)
    base = RandomProjection(1000, 10, 256, seed=0)
    band = make_eval_set(x_t, 10, 40, seed=2)[2]
    d = base.distances(x_t, band.a)
    assert np.abs(d - band.a.errors).mean() < 0.06
    assert np.corrcoef(d, band.a.errors)[0, 1] > 0.9


def test_greedy_attack_drives_distance_down(trained, x_t):
    art, _ = trained
    y_t = f_int(art.integer, x_t)
    start = nearby_start(x_t, 10, 0.15, seed=0)
    end = attack(art.integer, y_t, start, max_seconds=10)  # an IntegerDEL is accepted as is
    d0 = distance_ppb(f_int(art.integer, start), y_t) / PPB
    d1 = distance_ppb(f_int(art.integer, end), y_t) / PPB
    assert d1 < 0.25 * d0, (d0, d1)


def test_greedy_attack_on_baseline_from_random_start():
    """d is clamped to 1 for negative cosines; the attack still makes progress from there."""
    x_t = np.random.default_rng(4).integers(0, 10, size=300)
    base = RandomProjection(300, 10, 32, seed=0)
    y_t = base.embed(x_t)
    start = np.random.default_rng(5).integers(0, 10, size=300)
    end = attack(Target.from_baseline(base), y_t, start, max_seconds=10)
    cos = lambda x: float(base.embed(x) @ y_t / np.linalg.norm(base.embed(x)) / np.linalg.norm(y_t))  # noqa: E731
    assert cos(end) > cos(start) + 0.3


def test_fig3_formula_against_independent_high_precision():
    """Our p agrees with a 2F1 closed form and with quadrature of the cap; not with the paper's print."""
    for (eps, n), printed in PAPER_FIG3.items():
        ours = brute_force_p(eps, n)
        assert ours == pytest.approx(brute_force_p_hyp2f1(eps, n), rel=1e-12, abs=0)
        assert ours == pytest.approx(2 * cap_fraction_integral(eps, n), rel=1e-8, abs=0)
        assert abs(ours - printed) > 0.4 * printed  # the paper's printed values differ (issue 4)
    assert brute_force_p(0.10, 32) == pytest.approx(1.038e-12, rel=1e-3, abs=0)
    assert brute_force_p(0.10, 256) == pytest.approx(6.091e-94, rel=1e-3, abs=0)


def test_reward_curve_is_zero_at_d_c_and_positive_below():
    from del_embed.figures import reward_curve

    d = np.array([0.0, 0.2, 0.5])
    r = reward_curve(d, 0.5)
    assert r[2] == pytest.approx(0.0, abs=1e-15)
    assert r[0] > r[1] > 0


def test_inspection_attack_is_chance_on_the_untrained_baseline():
    from del_embed.attack import inspection_attack

    x_t = np.random.default_rng(6).integers(0, 10, size=2000)
    guess = inspection_attack(Target.from_baseline(RandomProjection(2000, 10, 32, seed=1)))
    assert guess.shape == x_t.shape
    # Chance is 1/C = 0.1; 2000 guesses land within 5 binomial standard errors of it.
    assert abs(float((guess == x_t).mean()) - 0.1) < 5 * np.sqrt(0.1 * 0.9 / x_t.size)
