"""A bound on |d_int - d_float| computed from a DEL's own artifact.

The integer DEL differs from its float MLP in two kinds of places:

- **Weight rounding.** ``quantize`` rounds layer 1 to multiples of ``2^-e1`` and layer 2
  to ``2^-e2`` (its bias to ``2^-(e2 + e1 - shift1)``). Both weight sets are in the
  artifact, so the rounded network without floors, ``o' = W2' relu(W1' enc(x) + b1') + b2'``,
  is computed in float64 and its distance from the float output ``o`` is known exactly.
- **Two floors.** The hidden layer is shifted right by ``shift1``, flooring each unit by
  less than ``2^(shift1 - e1)``, which moves output k by less than
  ``Σ_j |W2'_kj| 2^(shift1 - e1)``; the output is normalised as
  ``floor(o · S / isqrt(|o|²))``: at most 1 per coordinate on a vector of norm >= S, a
  direction error <= ``sqrt(n) / S``.

For vectors ``a``, ``a'``: ``|a/|a| - a'/|a'|| <= 2 |a - a'| / |a|``, so each embedding's unit
direction moves by at most ``δ = 2 (|o' - o| + |floor shift|) / |o| + 2 sqrt(n) / S``, and
``|cos(a', b') - cos(a, b)| <= δ_a + δ_b``. ``d = min(1, 1 - cos)`` is 1-Lipschitz in
``cos`` and ``distance_ppb`` floors to whole ppb, so
``|d_int - d_float| <= δ(x) + δ(x_t) + 1/PPB``. The bound follows whatever float weights
the training produced, so it holds on any CPU; its floor terms alone are at most
``4 sqrt(n) / S`` plus the hidden shift's share.
"""

from __future__ import annotations

import math

import numpy as np

from del_embed.integer import OUTPUT_SCALE, PPB, IntegerDEL


def scale_exponent(float_w: np.ndarray, int_w: np.ndarray) -> int:
    """The ``e`` with ``int_w == round(float_w · 2^e)`` (how ``quantize`` scaled the layer)."""
    peak = float(np.abs(float_w).max())
    guess = round(math.log2(float(np.abs(int_w).max()) / peak))
    for e in (guess, guess - 1, guess + 1):
        if np.array_equal(np.round(float_w * 2.0**e).astype(np.int64), int_w):
            return e
    raise AssertionError("integer weights are not the float weights rounded at one power-of-two scale")


def encode(model: IntegerDEL, labels: np.ndarray) -> np.ndarray:
    if model.encoding == "onehot":
        enc = np.zeros(model.m * model.num_classes)
        enc[np.arange(model.m) * model.num_classes + labels] = 1.0
        return enc
    return labels.astype(np.float64)


def direction_error(weights: dict[str, np.ndarray], model: IntegerDEL, labels: np.ndarray) -> float:
    """δ(x): how far f_int(x)'s unit direction can lie from the float MLP's."""
    w1, b1, w2, b2 = (np.asarray(weights[k], dtype=np.float64) for k in ("w1", "b1", "w2", "b2"))
    e1, e2 = scale_exponent(w1, model.w1), scale_exponent(w2, model.w2)
    w1q, b1q = model.w1 * 2.0**-e1, model.b1 * 2.0**-e1
    w2q, b2q = model.w2 * 2.0**-e2, model.b2 * 2.0 ** -(e2 + e1 - model.shift1)
    enc = encode(model, labels)
    out = w2 @ np.maximum(w1 @ enc + b1, 0.0) + b2
    rounded = w2q @ np.maximum(w1q @ enc + b1q, 0.0) + b2q
    shift_err = np.abs(w2q).sum(axis=1) * 2.0 ** (model.shift1 - e1)
    out_err = np.abs(rounded - out) + shift_err
    return 2.0 * float(np.linalg.norm(out_err)) / float(np.linalg.norm(out)) + 2.0 * math.sqrt(model.n) / OUTPUT_SCALE


def distance_error_bound(weights: dict[str, np.ndarray], model: IntegerDEL, x: np.ndarray, x_ref: np.ndarray) -> float:
    """Largest |d_int(x, x_ref) - d_float(x, x_ref)| the quantisation steps allow."""
    return direction_error(weights, model, x) + direction_error(weights, model, x_ref) + 1.0 / PPB
