"""Fidelity of a DEL, measured on ``f_int`` and beside the random-projection baseline.

Held-out vectors are perturbations of ``x_t`` with an *exact* number of changed
positions (each changed to a different class), drawn in pairs ``(k, k + Δ)``
with ``Δ = 0.5 percentage point of m``, in three bands of true error:
0–5%, 5–20%, 20–90%. Per band and per embedding:

- ``mae``: mean |e − d| over all vectors of the band;
- ``pearson``: Pearson r between e and d over those vectors;
- ``ranking_accuracy``: how often ``d(x_b) > d(x_a)`` for the pair whose true
  errors differ by 0.5pp (a tie counts as wrong);
- ``bias``: mean (d − e).

Both embeddings see the very same vectors. ``f_int`` of a perturbation is
computed incrementally from ``x_t``'s integer pre-activation; integer addition
is associative, so this is bit-identical to ``integer.f_int`` (a test checks).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from .baseline import RandomProjection
from .data import Changes, changes_exact
from .integer import PPB, IntegerDEL, distance_ppb, f_int, normalize_int

BANDS: tuple[tuple[str, float, float], ...] = (("0-5%", 0.0, 0.05), ("5-20%", 0.05, 0.20), ("20-90%", 0.20, 0.90))
RANKING_GAP = 0.005  # 0.5 percentage point


# ---------------------------------------------------------------------------
# f_int on many perturbations of x_t
# ---------------------------------------------------------------------------
def _columns(model: IntegerDEL, positions: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    if model.encoding == "onehot":
        return positions * model.num_classes + labels, None
    return positions, labels


def f_int_changes(model: IntegerDEL, x_t: np.ndarray, changes: Changes) -> list[tuple[int, ...]]:
    """``f_int`` of every perturbation in ``changes``, exactly, without summing m columns each time."""
    w1t = np.ascontiguousarray(model.w1.T)  # rows = input columns: gathers read contiguous memory
    m = x_t.shape[0]
    cols, wts = _columns(model, np.arange(m), x_t)
    base = _gather_sum(w1t, cols, wts)
    pre = np.empty((changes.batch_size, model.hidden), dtype=np.int64)
    for s in range(changes.batch_size):
        pos, new = changes.sample(s)
        c_new, w_new = _columns(model, pos, new)
        c_old, w_old = _columns(model, pos, x_t[pos])
        pre[s] = base + _gather_sum(w1t, c_new, w_new) - _gather_sum(w1t, c_old, w_old)
    h = np.maximum(pre + model.b1, 0) >> model.shift1
    out = h @ model.w2.T + model.b2
    return [normalize_int([int(v) for v in row]) for row in out]


def _gather_sum(w1t: np.ndarray, cols: np.ndarray, weights: np.ndarray | None) -> np.ndarray:
    if weights is None:
        return w1t[cols].sum(axis=0)
    return (w1t[cols] * weights[:, None]).sum(axis=0)


def del_distances(model: IntegerDEL, x_t: np.ndarray, changes: Changes) -> np.ndarray:
    """``distance_ppb(f_int(x_s), f_int(x_t)) / PPB`` for each perturbation."""
    y_t = f_int(model, x_t)
    return np.array([distance_ppb(y, y_t) / PPB for y in f_int_changes(model, x_t, changes)])


# ---------------------------------------------------------------------------
# Held-out set and metrics
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class BandSet:
    name: str
    a: Changes  # k changes
    b: Changes  # k + gap changes


def make_eval_set(x_t: np.ndarray, num_classes: int, pairs_per_band: int, seed: int) -> list[BandSet]:
    """Pairs of perturbations, 0.5pp of true error apart, in each band (fixed seed)."""
    m = x_t.shape[0]
    gap = max(1, round(RANKING_GAP * m))
    rng = np.random.default_rng(seed)
    out = []
    for name, lo, hi in BANDS:
        k_lo = max(1, math.ceil(lo * m))
        k_hi = max(k_lo + 1, math.floor(hi * m) - gap)  # exclusive: k + gap stays in the band
        ks = rng.integers(k_lo, k_hi, size=pairs_per_band)
        out.append(BandSet(name, changes_exact(x_t, num_classes, rng, ks), changes_exact(x_t, num_classes, rng, ks + gap)))
    return out


def band_metrics(e_a: np.ndarray, d_a: np.ndarray, e_b: np.ndarray, d_b: np.ndarray) -> dict[str, float]:
    e = np.concatenate([e_a, e_b])
    d = np.concatenate([d_a, d_b])
    return {
        "mae": float(np.abs(e - d).mean()),
        "pearson": pearson(e, d),
        "ranking_accuracy": float((d_b > d_a).mean()),
        "bias": float((d - e).mean()),
    }


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    if a.std() == 0 or b.std() == 0:
        return 0.0
    return float(np.corrcoef(a, b)[0, 1])


Distances = Callable[[np.ndarray, Changes], np.ndarray]


def evaluate_distances(x_t: np.ndarray, eval_set: list[BandSet], embeddings: dict[str, Distances]) -> dict:
    """Per-band and overall metrics for each named embedding on the same held-out vectors."""
    result: dict = {"bands": {}, "overall": {}}
    pooled: dict[str, list[np.ndarray]] = {name: [[], [], [], []] for name in embeddings}
    for band in eval_set:
        result["bands"][band.name] = {}
        for name, fn in embeddings.items():
            d_a, d_b = fn(x_t, band.a), fn(x_t, band.b)
            result["bands"][band.name][name] = band_metrics(band.a.errors, d_a, band.b.errors, d_b)
            for acc, v in zip(pooled[name], (band.a.errors, d_a, band.b.errors, d_b)):
                acc.append(v)
    for name, parts in pooled.items():
        result["overall"][name] = band_metrics(*(np.concatenate(p) for p in parts))
    return result


def evaluate_del(
    model: IntegerDEL, x_t: np.ndarray, pairs_per_band: int = 300, seed: int = 12345, baseline_seed: int = 0
) -> dict:
    """The report printed by ``daimon-node del eval``: DEL (``f_int``) and baseline side by side."""
    x_t = np.asarray(x_t, dtype=np.int64)
    base = RandomProjection(model.m, model.num_classes, model.n, seed=baseline_seed)
    res = evaluate_distances(
        x_t,
        make_eval_set(x_t, model.num_classes, pairs_per_band, seed),
        {"del": lambda x, ch: del_distances(model, x, ch), "baseline": base.distances},
    )
    overall = res["overall"]["del"]
    return {
        "mae": overall["mae"],
        "pearson": overall["pearson"],
        "ranking_accuracy": overall["ranking_accuracy"],
        "baseline": res["overall"]["baseline"],
        "bands": res["bands"],
        "m": model.m,
        "n": model.n,
        "num_classes": model.num_classes,
        "pairs_per_band": pairs_per_band,
        "embedding": "f_int",
    }
