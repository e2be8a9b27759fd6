"""The DEL for a problem's hidden labels ``x_t``: built (random or learned) and measured.

``random``: an untrained MLP initialised as a random projection of the one-hot labels (seconds);
``learned``: the paper's DEL trained by ``del_embed`` on GENERATEDATA(x_t) (minutes; torch).
docs/soundness.md ("Which DEL") has what each costs, in time, fidelity and what leaks.
"""

from __future__ import annotations

from typing import Final

import numpy as np

from del_embed.integer import (
    PPB,
    IntegerDEL,
    distance_ppb,
    f_int,
    integer_del_to_bytes,
    random_projection_del as projection_del,
)

from daimon_node.proofs.problem_errors import DELNeedsTorch

# The learned DEL's defaults. The time cap binds first on a small machine (about 2.4 steps/s
# at m = 10,000 on two idle cores, docs/del.md) and the learning rate follows the share of the
# cap used, so a run cut by time still ends annealed; docs/soundness.md has what it buys.
LEARNED_DEL_STEPS: Final[int] = 3000
LEARNED_DEL_SECONDS: Final[float] = 300.0


def random_projection_del(x_t: np.ndarray, num_classes: int, *, n: int = 256, seed: int = 0) -> bytes:
    """An untrained random-projection DEL artifact for ``x_t`` (see ``del_embed.integer.random_projection_del``)."""
    return integer_del_to_bytes(projection_del(int(len(x_t)), num_classes, n=n, seed=seed))


def require_torch() -> None:
    """Fail at once, before any data is read, when a learned DEL cannot be trained here."""
    try:
        import torch  # noqa: F401
    except ImportError as exc:
        raise DELNeedsTorch(str(exc)) from None


def trained_del(x_t: np.ndarray, num_classes: int, *, steps: int, seed: int = 0, max_seconds: float = 0.0) -> bytes:
    """A DEL trained on GENERATEDATA(x_t) by ``del_embed`` (imports torch: the ``train`` extra).

    Only the integer tensors ``f_int`` evaluates are published: ``del train``'s artifact also
    keeps the float weights for analysis, which at m = 10,000 would triple the content every
    peer fetches (147 MB instead of 49) and tell nothing the integer weights do not.
    """
    require_torch()
    from del_embed.model import DELConfig
    from del_embed.train import train_artifact

    cfg = DELConfig(m=int(len(x_t)), num_classes=num_classes, steps=steps, seed=seed, max_seconds=max_seconds)
    art, _ = train_artifact(np.asarray(x_t, dtype=np.int64), cfg)
    return integer_del_to_bytes(art.integer)


CALIBRATION_RATES: Final[tuple[float, ...]] = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5)


def calibrate_consistency(del_model: IntegerDEL, x_t: np.ndarray, num_classes: int, *, seed: int = 0,
                          per_rate: int = 4) -> int:
    """The DEL's relative fidelity on this ``x_t``, for the holdout consistency test.

    Label vectors with known error ``e`` (uniform wrong labels, and confusions
    where each class is always mistaken for one other) go through ``f_int``; the
    largest ``|d - e| / e`` times 1.25, rounded up to a whole percent, is the
    allowance. A problem's creator knows ``x_t``, so this is a measurement of
    the DEL actually used, not a guess; it reveals one number about it.
    """
    rng = np.random.default_rng(seed)
    truth = np.asarray(x_t, dtype=np.int64)
    y_t = f_int(del_model, truth)
    worst = 0.0
    for rate in CALIBRATION_RATES:
        for k in range(2 * per_rate):
            x = truth.copy()
            wrong = rng.choice(len(x), size=max(1, int(round(rate * len(x)))), replace=False)
            if k % 2 == 0:  # uniform wrong labels
                x[wrong] = (x[wrong] + rng.integers(1, num_classes, len(wrong))) % num_classes
            else:  # confusions: class c is always taken for confuse[c]
                confuse = (np.arange(num_classes) + rng.integers(1, num_classes, num_classes)) % num_classes
                x[wrong] = confuse[x[wrong]]
            e = float((x != truth).mean())
            d = distance_ppb(f_int(del_model, x), y_t) / PPB
            worst = max(worst, abs(d - e) / e)
    return int(min(PPB, np.ceil(worst * 1.25 * 100) * PPB // 100))
