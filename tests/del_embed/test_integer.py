"""The consensus integer DEL: exactness, the quantisation bound, artifact bytes."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest

from del_embed.integer import (
    MAX_BIAS_BITS,
    OUTPUT_SCALE,
    PPB,
    IntegerDEL,
    IntegerDELError,
    distance_ppb,
    error_ppb,
    f_int,
    integer_del_from_bytes,
    integer_del_to_bytes,
    quantize,
    worst_case_bounds,
)
from quantisation_bound import distance_error_bound


def random_float_mlp(rng, m, c, hidden, n, encoding):
    d_in = m * c if encoding == "onehot" else m
    return (
        rng.standard_normal((hidden, d_in)) / math.sqrt(m),
        rng.standard_normal(hidden) * 0.1,
        rng.standard_normal((n, hidden)) / math.sqrt(hidden),
        rng.standard_normal(n) * 0.1,
    )


def float_embed(w1, b1, w2, b2, labels, c, encoding):
    if encoding == "onehot":
        enc = np.zeros(w1.shape[1])
        enc[np.arange(labels.size) * c + labels] = 1.0
    else:
        enc = labels.astype(np.float64)
    out = w2 @ np.maximum(w1 @ enc + b1, 0.0) + b2
    return out / np.linalg.norm(out)


def reference_f_int(model: IntegerDEL, labels: np.ndarray) -> tuple[int, ...]:
    """f_int in pure Python ints, column by column (no numpy arithmetic)."""
    w1, b1, w2, b2 = (a.tolist() for a in (model.w1, model.b1, model.w2, model.b2))
    x = [int(v) for v in labels]
    hid = []
    for j in range(model.hidden):
        if model.encoding == "onehot":
            s = sum(w1[j][i * model.num_classes + x[i]] for i in range(model.m))
        else:
            s = sum(w1[j][i] * x[i] for i in range(model.m))
        hid.append(max(0, s + b1[j]) >> model.shift1)
    out = [sum(w2[k][j] * hid[j] for j in range(model.hidden)) + b2[k] for k in range(model.n)]
    norm = math.isqrt(sum(v * v for v in out))
    return tuple((v * OUTPUT_SCALE) // norm for v in out)


@pytest.mark.parametrize("encoding", ["onehot", "value"])
def test_f_int_matches_python_int_reference(encoding):
    rng = np.random.default_rng(1)
    m, c = 40, 5
    model = quantize(*random_float_mlp(rng, m, c, 12, 8, encoding), m=m, num_classes=c, encoding=encoding)
    for _ in range(5):
        x = rng.integers(0, c, size=m)
        assert f_int(model, x) == reference_f_int(model, x)


@pytest.mark.parametrize("encoding", ["onehot", "value"])
@pytest.mark.parametrize("bits", [12, 15])
def test_quantised_distance_close_to_float(encoding, bits):
    """d from f_int stays within the bound its quantisation steps allow (``quantisation_bound``).

    More weight bits must shrink that bound: the rounding steps halve with every bit.
    """
    rng = np.random.default_rng(2)
    m, c = 200, 10
    w = random_float_mlp(rng, m, c, 64, 32, encoding)
    weights = dict(zip(("w1", "b1", "w2", "b2"), w))
    model = quantize(*w, m=m, num_classes=c, encoding=encoding, weight_bits=bits)
    x_t = rng.integers(0, c, size=m)
    yf_t = float_embed(*w, x_t, c, encoding)
    y_t = f_int(model, x_t)
    for k in (1, 5, 20, 60, 150):
        x = x_t.copy()
        pos = rng.choice(m, size=k, replace=False)
        x[pos] = (x[pos] + rng.integers(1, c, size=k)) % c
        d_int = distance_ppb(f_int(model, x), y_t) / PPB
        cos = float(float_embed(*w, x, c, encoding) @ yf_t)
        d_float = 1.0 - cos if cos >= 0 else 1.0
        assert abs(d_int - d_float) <= distance_error_bound(weights, model, x, x_t)


def test_quantisation_bound_shrinks_with_weight_bits():
    rng = np.random.default_rng(2)
    m, c = 200, 10
    w = random_float_mlp(rng, m, c, 64, 32, "onehot")
    weights = dict(zip(("w1", "b1", "w2", "b2"), w))
    x_t = rng.integers(0, c, size=m)
    x = (x_t + (rng.random(m) < 0.1)) % c
    coarse, fine = (distance_error_bound(weights, quantize(*w, m=m, num_classes=c, encoding="onehot", weight_bits=b), x, x_t)
                    for b in (8, 15))
    assert fine < coarse


def test_distance_and_error_ppb_basics():
    y = (OUTPUT_SCALE, 0, 0)
    assert distance_ppb(y, y) == 0
    assert distance_ppb(y, (0, OUTPUT_SCALE, 0)) == PPB
    assert distance_ppb(y, (-OUTPUT_SCALE, 0, 0)) == PPB
    assert distance_ppb((1, 1), (1, 0)) == PPB - 707106781  # 1 - cos(45°), floor of cos
    assert error_ppb(np.array([0, 1, 2, 3]), np.array([0, 1, 0, 0])) == PPB // 2
    assert error_ppb(np.array([0, 1]), np.array([1, 1]), mask=np.array([True, False])) == 0


def test_worst_case_bound_uses_one_column_per_position():
    rng = np.random.default_rng(3)
    m, c = 30, 4
    model = quantize(*random_float_mlp(rng, m, c, 8, 4, "onehot"), m=m, num_classes=c, encoding="onehot")
    pre, _ = worst_case_bounds(model)
    for _ in range(20):
        x = rng.integers(0, c, size=m)
        z = model.w1[:, np.arange(m) * c + x].sum(axis=1) + model.b1
        assert int(np.abs(z).max()) <= pre
    assert pre < int(np.abs(model.w1).sum(axis=1).max())  # tighter than summing all C columns


def test_overflowing_weights_are_rejected():
    big = np.full((4, 2), (1 << 15) - 1, dtype=np.int64)
    with pytest.raises(IntegerDELError, match="overflow"):
        IntegerDEL(m=2, num_classes=2, hidden=2, n=4, encoding="value", w1=np.full((2, 2), 1, dtype=np.int64),
                   b1=np.full(2, (1 << (MAX_BIAS_BITS - 1)) - 1, dtype=np.int64), w2=big,
                   b2=np.zeros(4, dtype=np.int64), shift1=0)


def test_artifact_round_trip_and_narrow_storage():
    rng = np.random.default_rng(4)
    m, c = 50, 3
    w = random_float_mlp(rng, m, c, 16, 8, "onehot")
    model = quantize(*w, m=m, num_classes=c, encoding="onehot", weight_bits=8, config={"note": "x"})
    data = integer_del_to_bytes(model, extra={"float.w1": w[0].astype(np.float32)})
    back = integer_del_from_bytes(data)
    for name in ("w1", "b1", "w2", "b2"):
        np.testing.assert_array_equal(getattr(back, name), getattr(model, name))
    assert (back.shift1, back.encoding, back.config["note"]) == (model.shift1, "onehot", "x")
    x = rng.integers(0, c, size=m)
    assert f_int(back, x) == f_int(model, x)
    from safetensors.numpy import load

    assert load(data)["int.w1"].dtype == np.int8  # 8-bit weights are stored in one byte


def _valid_bytes() -> bytes:
    rng = np.random.default_rng(5)
    return integer_del_to_bytes(quantize(*random_float_mlp(rng, 10, 3, 4, 4, "onehot"), m=10, num_classes=3,
                                         encoding="onehot"))


def _rewrite_meta(data: bytes, **changes) -> bytes:
    from safetensors.numpy import load, save

    n = int.from_bytes(data[:8], "little")
    meta = json.loads(json.loads(data[8 : 8 + n])["__metadata__"]["daimon_del"])
    meta.update(changes)
    return save(load(data), metadata={"daimon_del": json.dumps(meta)})


@pytest.mark.parametrize(
    "mutate",
    [
        lambda b: b[:5],
        lambda b: b[:-7],
        lambda b: b"\xff" * 8 + b[8:],
        lambda b: _rewrite_meta(b, version=99),
        lambda b: _rewrite_meta(b, m=11),
        lambda b: _rewrite_meta(b, encoding="pickle"),
        lambda b: _rewrite_meta(b, shift1=-1),
        lambda b: _rewrite_meta(b, output_scale=1),
    ],
    ids=["short", "truncated", "header-len", "version", "shape", "encoding", "shift", "scale"],
)
def test_malformed_artifact_raises_typed_error(mutate):
    with pytest.raises(IntegerDELError):
        integer_del_from_bytes(mutate(_valid_bytes()))


def test_float_tensor_in_integer_slot_is_rejected():
    from safetensors.numpy import load, save

    data = _valid_bytes()
    tensors = load(data)
    tensors["int.w2"] = tensors["int.w2"].astype(np.float32)
    n = int.from_bytes(data[:8], "little")
    meta = json.loads(data[8 : 8 + n])["__metadata__"]
    with pytest.raises(IntegerDELError, match="integer"):
        integer_del_from_bytes(save(tensors, metadata=meta))


def test_bad_labels_are_rejected():
    model = integer_del_from_bytes(_valid_bytes())
    with pytest.raises(IntegerDELError):
        f_int(model, np.zeros(9, dtype=np.int64))
    with pytest.raises(IntegerDELError):
        f_int(model, np.full(10, 3, dtype=np.int64))
    with pytest.raises(IntegerDELError):
        f_int(model, np.zeros(10, dtype=np.float64))


def test_importing_integer_and_package_does_not_import_torch():
    code = "import sys, del_embed, del_embed.integer; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
