"""The untrained baseline: a random projection of the one-hot label vector to n.

By Johnson–Lindenstrauss, ``R onehot(x)`` with Gaussian ``R`` keeps
``cos(Rx, Rx_t) ≈ 1 - e(x, x_t)``, so ``d`` tracks ``e`` with no training at all.
It is the bar a trained DEL must clear (docs/design.md §9). Evaluated in float64 —
it is a yardstick, never consensus.
"""

from __future__ import annotations

import numpy as np

from .data import Changes


class RandomProjection:
    """``y(x) = R onehot(x)``, ``R`` (m*C, n) Gaussian from a fixed seed, evaluated incrementally."""

    def __init__(self, m: int, num_classes: int, n: int, seed: int = 0) -> None:
        self.m, self.num_classes, self.n = m, num_classes, n
        self.rows = np.random.default_rng(seed).standard_normal((m * num_classes, n))

    def embed(self, labels: np.ndarray) -> np.ndarray:
        cols = np.arange(self.m) * self.num_classes + np.asarray(labels, dtype=np.int64)
        return self.rows[cols].sum(axis=0)

    def distances(self, x_t: np.ndarray, changes: Changes) -> np.ndarray:
        """``d(y(x_s), y(x_t))`` for each perturbation ``s``: x_t's sum plus the changed rows."""
        y_t = self.embed(x_t)
        out = np.empty(changes.batch_size)
        for s in range(changes.batch_size):
            pos, new = changes.sample(s)
            c = self.num_classes
            y = y_t + self.rows[pos * c + new].sum(axis=0) - self.rows[pos * c + x_t[pos]].sum(axis=0)
            out[s] = cosine_distance(y, y_t)
        return out


def cosine_distance(a: np.ndarray, b: np.ndarray) -> float:
    """The DEL distance in float: ``1 - cos`` or 1 when the dot product is negative."""
    dot = float(a @ b)
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if dot < 0 or na == 0.0 or nb == 0.0:
        return 1.0
    return 1.0 - dot / (na * nb)
