"""Label files and GENERATEDATA."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from del_embed.data import (
    changes_exact,
    changes_from_draws,
    fashion_mnist_test_labels,
    generate_data,
    load_labels,
    sample_v,
)
from del_embed.errors import LabelFileError


def idx_bytes(labels: np.ndarray) -> bytes:
    return (0x801).to_bytes(4, "big") + len(labels).to_bytes(4, "big") + labels.astype(np.uint8).tobytes()


def test_load_npy_idx_and_gzipped_idx(tmp_path: Path):
    labels = np.array([3, 1, 4, 1, 5, 9, 2, 6])
    np.save(tmp_path / "a.npy", labels)
    (tmp_path / "b.idx").write_bytes(idx_bytes(labels))
    (tmp_path / "c.gz").write_bytes(gzip.compress(idx_bytes(labels)))
    for name in ("a.npy", "b.idx", "c.gz"):
        got = load_labels(tmp_path / name)
        assert got.dtype == np.int64
        np.testing.assert_array_equal(got, labels)


@pytest.mark.parametrize(
    "content",
    [b"", b"hello world!", idx_bytes(np.arange(4))[:-1], (0x803).to_bytes(4, "big") + b"\0" * 8],
    ids=["empty", "garbage", "short-idx", "3d-idx"],
)
def test_bad_label_files_raise(tmp_path: Path, content: bytes):
    p = tmp_path / "bad"
    p.write_bytes(content)
    with pytest.raises(LabelFileError):
        load_labels(p)


def test_npy_of_floats_or_objects_is_rejected(tmp_path: Path):
    np.save(tmp_path / "f.npy", np.zeros(4))
    np.save(tmp_path / "o.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    for name in ("f.npy", "o.npy"):
        with pytest.raises(LabelFileError):
            load_labels(tmp_path / name)
    with pytest.raises(LabelFileError, match="does not exist"):
        load_labels(tmp_path / "missing.npy")


def test_generate_data_distribution():
    """v uniform in 1..m and a re-drawn position changes with probability (C-1)/C: E[e] = (m+1)/2m * 0.9."""
    rng = np.random.default_rng(0)
    m, c = 200, 10
    x_t = rng.integers(0, c, size=m)
    errors = np.array([(generate_data(x_t, c, rng) != x_t).mean() for _ in range(4000)])
    n = len(errors)
    # e is close to uniform on [0, 0.9] (std 0.9/sqrt(12)); the mean of n draws is within 5 standard errors.
    assert abs(errors.mean() - (m + 1) / (2 * m) * 0.9) < 5 * (0.9 / np.sqrt(12)) / np.sqrt(n)
    assert errors.max() <= 1.0 and errors.min() >= 0.0
    # Each of 9 equal bins over [0, 0.9] holds p = 1/9 of the draws, within 5 binomial standard deviations.
    hist, _ = np.histogram(errors, bins=9, range=(0, 0.9))
    p = 1 / 9
    spread = 5 * np.sqrt(n * p * (1 - p))
    assert hist.min() > n * p - spread and hist.max() < n * p + spread


def test_changes_match_generate_data_statistics():
    rng = np.random.default_rng(1)
    m, c = 500, 10
    x_t = rng.integers(0, c, size=m)
    vs = np.full(2000, 250)
    ch = changes_from_draws(x_t, c, rng, vs)
    # Each of the 250 re-drawn positions changes with probability 0.9: the error of one sample is
    # Binomial(250, 0.9) / m; the mean of 2000 samples is within 5 standard errors of 250 * 0.9 / m.
    sd_one = np.sqrt(250 * 0.9 * 0.1) / m
    assert abs(ch.errors.mean() - 250 * 0.9 / m) < 5 * sd_one / np.sqrt(len(vs))
    for s in range(20):
        pos, new = ch.sample(s)
        assert len(set(pos.tolist())) == len(pos)
        assert np.all(new != x_t[pos])
        assert (ch.apply(x_t, s) != x_t).sum() == len(pos)


def test_changes_exact_has_exact_k():
    rng = np.random.default_rng(2)
    x_t = rng.integers(0, 10, size=100)
    ks = np.array([1, 7, 50, 99])
    ch = changes_exact(x_t, 10, rng, ks)
    for s, k in enumerate(ks):
        assert (ch.apply(x_t, s) != x_t).sum() == k
    np.testing.assert_allclose(ch.errors, ks / 100)


def test_sample_v_mixture_covers_low_errors():
    rng = np.random.default_rng(3)
    vs = sample_v(rng, 20000, 1000, 10, low_error_frac=0.75, low_error_max=0.25)
    assert vs.min() >= 1 and vs.max() <= 1000
    e = vs * 0.9 / 1000
    # e <= 0.25 means v <= 277. A low-error draw has v = rint(u * 1000 / 0.9) for u uniform in
    # [0, 0.25], so v <= 277 with probability 277.5 / 277.78; a uniform draw of v in 1..1000 with
    # probability 277/1000. The observed fraction of 20000 draws is within 5 standard errors of p.
    p = 0.75 * 277.5 / (0.25 * 1000 / 0.9) + 0.25 * 277 / 1000
    assert abs((e <= 0.25 + 1e-9).mean() - p) < 5 * np.sqrt(p * (1 - p) / len(vs))


@pytest.mark.skipif(not fashion_mnist_test_labels().exists(),
                    reason="FashionMNIST labels not found (set DAIMON_DATASETS or put them in ../shared/datasets)")
def test_fashion_mnist_test_labels():
    labels = load_labels(fashion_mnist_test_labels())
    assert labels.shape == (10_000,)
    assert np.bincount(labels).tolist() == [1000] * 10
