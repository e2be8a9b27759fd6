"""The float DEL, its training, and the float-vs-f_int agreement of a trained DEL."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from del_embed.data import changes_exact, changes_from_draws  # noqa: E402
from del_embed.integer import PPB, distance_ppb, f_int  # noqa: E402
from del_embed.model import DEL, DELConfig, DeltaBatch, distance  # noqa: E402
from del_embed.train import get_lr  # noqa: E402
from quantisation_bound import distance_error_bound  # noqa: E402


@pytest.mark.parametrize("encoding", ["onehot", "value"])
def test_incremental_forward_equals_full_embedding(encoding):
    """forward's h(x_t) + column deltas gives the same d as embedding each vector from scratch."""
    cfg = DELConfig(m=60, num_classes=5, hidden=16, n=8, encoding=encoding)
    torch.manual_seed(0)
    model = DEL(cfg).double()
    rng = np.random.default_rng(0)
    x_t = rng.integers(0, 5, size=60)
    ch = changes_from_draws(x_t, 5, rng, np.array([1, 10, 30, 60]))
    batch = DeltaBatch.build(x_t, ch, cfg)
    batch = DeltaBatch(batch.rows, batch.weights.double(), batch.offsets, batch.loss_weights.double())
    with torch.no_grad():
        d, loss = model(batch)
        full = model.embed(torch.from_numpy(np.stack([ch.apply(x_t, s) for s in range(4)] + [x_t])))
    assert loss is None
    np.testing.assert_allclose(d.numpy(), distance(full[:4], full[4:]).numpy(), atol=1e-12)


def test_forward_returns_weighted_l1_loss():
    cfg = DELConfig(m=50, hidden=8, n=8, band_weight=3.0)
    model = DEL(cfg)
    rng = np.random.default_rng(1)
    x_t = rng.integers(0, 10, size=50)
    ch = changes_exact(x_t, 10, rng, np.array([1, 5, 30]))  # e = 0.02, 0.10 (band), 0.60
    batch = DeltaBatch.build(x_t, ch, cfg)
    targets = torch.from_numpy(ch.errors.astype(np.float32))
    d, loss = model(batch, targets)
    err = (d - targets).abs().detach().numpy()
    assert float(loss.detach()) == pytest.approx((err[0] + 3 * err[1] + err[2]) / 5, rel=1e-5)


def test_lr_schedule_warms_up_and_decays():
    cfg = DELConfig(steps=100, warmup_steps=10, lr=1e-3, lr_min_frac=0.1)
    assert get_lr(0, cfg) == pytest.approx(1e-4)
    assert get_lr(10, cfg) == pytest.approx(1e-3)
    assert get_lr(99, cfg) < 1.2e-4 and get_lr(99, cfg) >= 1e-4


def test_training_lowers_held_out_loss(trained):
    _, res = trained
    first, last = res.test_loss[0][1], res.test_loss[-1][1]
    assert last < 0.5 * first, (first, last)
    assert res.steps_done == res.config.steps


def test_training_is_seeded(x_t, small_cfg):
    from dataclasses import replace

    from del_embed.train import train

    cfg = replace(small_cfg, steps=5)
    a, b = train(x_t, cfg), train(x_t, cfg)
    assert torch.equal(a.model.w1, b.model.w1)


def test_f_int_tracks_the_trained_float_model(trained, x_t):
    """|d_int - d_float| on a trained DEL stays within what its quantisation steps allow.

    The bound is computed from the artifact itself (``quantisation_bound``: layer scales,
    the hidden shift and the output normalisation), not read off one run: the seeded
    training lands on different float weights on another CPU, the bound follows them.
    """
    art, res = trained
    rng = np.random.default_rng(5)
    ch = changes_exact(x_t, 10, rng, np.array([1, 5, 15, 40, 100, 200]))
    with torch.no_grad():
        d_float, _ = res.model.double()(_double(DeltaBatch.build(x_t, ch, res.config)))
    y_t = f_int(art.integer, x_t)
    d_int = np.array([distance_ppb(f_int(art.integer, ch.apply(x_t, s)), y_t) / PPB for s in range(6)])
    res.model.float()
    bounds = np.array([distance_error_bound(art.float_weights, art.integer, ch.apply(x_t, s), x_t) for s in range(6)])
    assert (np.abs(d_int - d_float.numpy()) <= bounds).all(), (np.abs(d_int - d_float.numpy()), bounds)
    # The bound is tight enough to matter: below the DEL's ranking resolution (0.5 points of error).
    assert bounds.max() < 0.005


def _double(b: DeltaBatch) -> DeltaBatch:
    return DeltaBatch(b.rows, b.weights.double(), b.offsets, b.loss_weights.double())
