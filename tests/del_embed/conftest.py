"""Small shared fixtures: one tiny trained DEL reused by several test modules."""

from __future__ import annotations

import numpy as np
import pytest

SMALL_M = 300


@pytest.fixture(scope="session")
def x_t() -> np.ndarray:
    return np.random.default_rng(42).integers(0, 10, size=SMALL_M)


@pytest.fixture(scope="session")
def small_cfg():
    from del_embed.model import DELConfig

    return DELConfig(m=SMALL_M, hidden=32, n=32, steps=120, batch_size=64, threads=1, lr=3e-3, warmup_steps=10)


@pytest.fixture(scope="session")
def trained(x_t, small_cfg):
    """(artifact, TrainResult) of a tiny DEL: seconds to train, shared by the session."""
    pytest.importorskip("torch")
    from del_embed.train import train_artifact

    return train_artifact(x_t, small_cfg)
