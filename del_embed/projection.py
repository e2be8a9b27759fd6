"""An untrained integer DEL: the MLP set up to compute a random projection of one-hot(x).

``W1`` is Gaussian (n x m*C); ``b1`` is each unit's worst-case |pre-activation|
so ReLU never clips, for any input; ``W2`` is the identity and ``b2 = -b1``, so
the output is exactly ``W1 onehot(x)`` up to quantisation. By
Johnson–Lindenstrauss ``1 - cos`` then tracks the label error (DESIGN §9: MAE
0.0018 below 5% error on FashionMNIST). numpy only: usable by ``chain``'s
devnet and by a contributor without torch. The seed regenerates the floats.
"""

from __future__ import annotations

import numpy as np

from .integer import IntegerDEL, quantize


def random_projection_del(m: int, num_classes: int, *, n: int = 256, seed: int = 0) -> IntegerDEL:
    rng = np.random.default_rng(seed)
    w1 = rng.standard_normal((n, m * num_classes)) / np.sqrt(m)
    b1 = np.abs(w1).reshape(n, m, num_classes).max(axis=2).sum(axis=1) + 1.0
    return quantize(w1, b1, np.eye(n), -b1, m=m, num_classes=num_classes, encoding="onehot", weight_bits=12,
                    config={"kind": "random-projection", "seed": seed})
