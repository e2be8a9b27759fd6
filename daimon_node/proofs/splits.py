"""A labelled dataset and its seeded split into test, holdout and training parts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np

from daimon_node.proofs.problem_errors import ProblemKitError, TooFewItems

DATASETS: Final[tuple[str, ...]] = ("digits",)
SPLIT_SEED: Final[int] = 0


@dataclass(frozen=True)
class Dataset:
    """Inputs ``x`` (N, ...) as float32 or uint8, labels ``y`` (N,) in 0..C-1, and the value
    range ``value_low/value_den .. value_high/value_den`` (the problem's ``InputSpec``).

    ``class_names[c]`` is class ``c``'s original label (empty when the labels were ids already);
    user data is read into a ``Dataset`` by ``daimon_node.proofs.datasets``.
    """

    name: str
    x: np.ndarray
    y: np.ndarray
    num_classes: int
    value_low: int
    value_high: int
    value_den: int = 1
    class_names: tuple[str, ...] = ()


def load_dataset(name: str) -> Dataset:
    """A bundled, offline dataset by name (scikit-learn's digits: 1,797 8x8 images, values 0..16)."""
    if name != "digits":
        raise ProblemKitError(f"unknown dataset {name!r}; available: {', '.join(DATASETS)}")
    from sklearn.datasets import load_digits

    d = load_digits()
    return Dataset("digits", d.data.astype(np.float32), d.target.astype(np.int64), 10, 0, 16)


@dataclass(frozen=True)
class Split:
    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    holdout_x: np.ndarray | None
    holdout_y: np.ndarray | None


def split_dataset(ds: Dataset, *, test_fraction: float = 0.3, holdout_fraction: float = 0.0, seed: int = SPLIT_SEED) -> Split:
    """A seeded permutation cut into test, holdout and train (in that order).

    The same dataset, fractions and seed always give the same split, so the
    examples (``daimon_node.harness.examples``) can train on exactly the published train split.
    """
    n = len(ds.y)
    if not (0.0 < test_fraction <= 1.0 and 0.0 <= holdout_fraction < 1.0 and test_fraction + holdout_fraction <= 1.0):
        raise ProblemKitError(f"bad split fractions test={test_fraction} holdout={holdout_fraction}")
    perm = np.random.default_rng(seed).permutation(n)
    n_test = int(round(test_fraction * n))
    n_hold = int(round(holdout_fraction * n))
    if n_test < 1:
        raise TooFewItems(n, f"a test share of {test_fraction}", min_items(test_fraction))
    if holdout_fraction > 0 and n_hold < 1:
        raise TooFewItems(n, f"a holdout share of {holdout_fraction}", min_items(holdout_fraction))
    if n_test + n_hold > n:
        raise TooFewItems(n, f"test and holdout shares rounded to {n_test} + {n_hold} items", n_test + n_hold)
    test, hold, train = perm[:n_test], perm[n_test : n_test + n_hold], perm[n_test + n_hold :]
    return Split(
        ds.x[train], ds.y[train], ds.x[test], ds.y[test],
        ds.x[hold] if n_hold else None, ds.y[hold] if n_hold else None,
    )


def min_items(fraction: float) -> int:
    """The fewest items of which ``fraction`` rounds to at least one (``round`` as the split uses it)."""
    k = 1
    while int(round(fraction * k)) < 1:
        k += 1
    return k
