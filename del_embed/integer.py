"""The consensus DEL: quantisation and the integer embedding ``f_int``.

This module is the one definition of the embedding every node must agree on
(docs/design.md §3). It uses numpy integer arithmetic and Python ints only — no floats
touch a value that reaches consensus — and it must stay importable without
torch, because ``chain/`` imports it and a node never loads torch.

The float model trained by ``del_embed.train`` is an MLP
``labels -> encode -> W1 -> ReLU -> W2 -> unit-normalise``. ``quantize`` turns
its float weights into integers plus power-of-two shifts; ``f_int`` evaluates
the integer network exactly:

    h   = max(0, W1q @ enc(x) + b1q) >> shift1        (int64)
    o   = W2q @ h + b2q                                (Python ints for the norm)
    y_j = floor(o_j * OUTPUT_SCALE / isqrt(sum o^2))

and ``distance_ppb`` gives ``d = 1 - cos`` (or 1 when the dot product is
negative) in parts per billion, exactly, with ``math.isqrt``.

Encodings of a label vector ``x`` (length m, values 0..C-1):

- ``"value"``: the paper's encoding, ``enc(x)_i = x_i`` (W1 is h x m).
- ``"onehot"``: ``enc(x)`` is the one-hot of each position, flattened
  position-major (W1 is h x m*C); evaluated as a gather, never materialised.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Final, Mapping

import numpy as np

# ---------------------------------------------------------------------------
# Constants (consensus)
# ---------------------------------------------------------------------------
PPB: Final[int] = 1_000_000_000  # parts per billion: distance 1.0
OUTPUT_SCALE: Final[int] = 1 << 14  # a unit vector's entries are scaled to this
ARTIFACT_VERSION: Final[int] = 1
ENCODINGS: Final[tuple[str, ...]] = ("value", "onehot")
MAX_WEIGHT_BITS: Final[int] = 16  # |quantised weight| < 2^15, keeps int64 sums exact
MAX_BIAS_BITS: Final[int] = 48  # |quantised bias| < 2^47: biases live on the sums' scale
INT64_SAFE: Final[int] = 1 << 62  # every intermediate's worst case must stay below this
MASKED: Final[int] = -1  # label value at an ambiguous (masked) position


class IntegerDELError(ValueError):
    """An integer DEL artifact or a label vector does not fit the rules."""


@dataclass(frozen=True)
class IntegerDEL:
    """Quantised weights of one DEL; the object ``f_int`` evaluates.

    Weights are int64 numpy arrays with ``|w| < 2^15``, biases ``|b| < 2^47``
    (a bias lives on the scale of its layer's sums, not of its weights);
    ``shift1`` is the right shift applied to the hidden layer so the second
    layer's sums stay small. ``check_integer_del`` proves from the weights alone
    that no int64 intermediate of ``f_int`` can overflow, for any input.
    """

    m: int
    num_classes: int
    hidden: int
    n: int
    encoding: str
    w1: np.ndarray  # (hidden, d_in) int64
    b1: np.ndarray  # (hidden,) int64
    w2: np.ndarray  # (n, hidden) int64
    b2: np.ndarray  # (n,) int64
    shift1: int
    config: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_integer_del(self)

    @property
    def input_dim(self) -> int:
        return input_dim(self.encoding, self.m, self.num_classes)


def input_dim(encoding: str, m: int, num_classes: int) -> int:
    if encoding == "value":
        return m
    if encoding == "onehot":
        return m * num_classes
    raise IntegerDELError(f"unknown DEL encoding {encoding!r}; expected one of {ENCODINGS}")


def check_integer_del(model: IntegerDEL) -> None:
    """Raise ``IntegerDELError`` unless shapes, dtypes and ranges are sound."""
    if model.m <= 0 or model.hidden <= 0 or model.n <= 0 or model.num_classes < 2:
        raise IntegerDELError(
            f"bad DEL sizes m={model.m} C={model.num_classes} hidden={model.hidden} n={model.n}"
        )
    d_in = input_dim(model.encoding, model.m, model.num_classes)
    expected = {
        "w1": (model.hidden, d_in),
        "b1": (model.hidden,),
        "w2": (model.n, model.hidden),
        "b2": (model.n,),
    }
    for name, shape in expected.items():
        arr = getattr(model, name)
        if not isinstance(arr, np.ndarray) or arr.dtype != np.int64:
            raise IntegerDELError(f"DEL tensor {name} must be an int64 array")
        if arr.shape != shape:
            raise IntegerDELError(f"DEL tensor {name} has shape {arr.shape}, expected {shape}")
        bits = MAX_BIAS_BITS if name.startswith("b") else MAX_WEIGHT_BITS
        if arr.size and int(np.abs(arr).max()) >= 1 << (bits - 1):
            raise IntegerDELError(f"DEL tensor {name} exceeds the {bits}-bit range")
    if not 0 <= model.shift1 <= 62:
        raise IntegerDELError(f"DEL shift1={model.shift1} out of range 0..62")
    pre, out = worst_case_bounds(model)
    if pre >= INT64_SAFE or out >= INT64_SAFE:
        raise IntegerDELError("DEL weights could overflow int64 in f_int")


def worst_case_bounds(model: IntegerDEL) -> tuple[int, int]:
    """Exact upper bounds (Python ints) of |hidden pre-activation| and |output| over all inputs.

    One-hot input activates one column per position, so the first layer's
    worst case sums each position's largest |weight|, not all C of them.
    """
    return _worst_pre(model.w1, model.b1, model.encoding, model.m, model.num_classes), _worst_out(
        model.w1, model.b1, model.w2, model.b2, model.encoding, model.m, model.num_classes, model.shift1
    )


def _worst_pre(w1: np.ndarray, b1: np.ndarray, encoding: str, m: int, num_classes: int) -> int:
    if w1.size == 0:
        return int(np.abs(b1).max(initial=0))
    a = np.abs(w1)
    if encoding == "onehot":
        per_unit = a.reshape(a.shape[0], m, num_classes).max(axis=2).sum(axis=1)
    else:
        per_unit = a.sum(axis=1) * (num_classes - 1)
    return max(int(p) + int(abs(b)) for p, b in zip(per_unit.tolist(), b1.tolist()))


def _worst_out(
    w1: np.ndarray, b1: np.ndarray, w2: np.ndarray, b2: np.ndarray, encoding: str, m: int, num_classes: int, shift1: int
) -> int:
    h_max = _worst_pre(w1, b1, encoding, m, num_classes) >> shift1
    row = [int(v) for v in np.abs(w2).sum(axis=1).tolist()] if w2.size else [0]
    bias = [abs(int(v)) for v in b2.tolist()] or [0]
    return max(r * h_max + b for r, b in zip(row, bias))


def check_labels(labels: np.ndarray, m: int, num_classes: int) -> np.ndarray:
    """Return ``labels`` as int64 after checking length and class range."""
    arr = np.asarray(labels)
    if arr.ndim != 1 or arr.shape[0] != m:
        raise IntegerDELError(f"label vector has shape {arr.shape}, expected ({m},)")
    if arr.dtype.kind not in "iu":
        raise IntegerDELError(f"label vector must hold integers, not {arr.dtype}")
    arr = arr.astype(np.int64, copy=False)
    if arr.size and (int(arr.min()) < 0 or int(arr.max()) >= num_classes):
        raise IntegerDELError(f"labels must lie in 0..{num_classes - 1}")
    return arr


# ---------------------------------------------------------------------------
# The integer forward pass
# ---------------------------------------------------------------------------
def first_layer(model: IntegerDEL, labels: np.ndarray) -> np.ndarray:
    """``W1 @ enc(x)`` in int64 (exact: |w| < 2^15, d_in terms, labels < 2^8)."""
    if model.encoding == "value":
        return model.w1 @ labels
    cols = np.arange(model.m, dtype=np.int64) * model.num_classes + labels
    return model.w1[:, cols].sum(axis=1)


def hidden_layer(model: IntegerDEL, labels: np.ndarray) -> np.ndarray:
    pre = first_layer(model, labels) + model.b1
    return np.maximum(pre, 0) >> model.shift1


def normalize_int(out: list[int]) -> tuple[int, ...]:
    """Scale an integer vector to norm ~OUTPUT_SCALE, exactly (floor division)."""
    norm = math.isqrt(sum(v * v for v in out))
    if norm == 0:
        return tuple(0 for _ in out)
    return tuple((v * OUTPUT_SCALE) // norm for v in out)


def f_int(model: IntegerDEL, labels: np.ndarray) -> tuple[int, ...]:
    """The consensus embedding of one label vector: a tuple of n Python ints."""
    x = check_labels(labels, model.m, model.num_classes)
    h = hidden_layer(model, x)
    # The second layer can exceed int64 in its squared norm: finish in Python ints.
    out = [int(v) for v in (model.w2 @ h + model.b2)]
    return normalize_int(out)


def distance_ppb(y1: tuple[int, ...] | list[int], y2: tuple[int, ...] | list[int]) -> int:
    """``d(y1, y2) = 1 - cos`` (1 when ``y1·y2 < 0``) in parts per billion, exactly.

    ``floor(PPB * dot / sqrt(n1 n2)) == isqrt(floor(PPB^2 dot^2 / (n1 n2)))``
    because ``floor(sqrt(floor(r))) == floor(sqrt(r))`` for real ``r >= 0``.
    """
    if len(y1) != len(y2):
        raise IntegerDELError(f"embeddings differ in length: {len(y1)} vs {len(y2)}")
    dot = sum(int(a) * int(b) for a, b in zip(y1, y2))
    if dot < 0:
        return PPB
    n1 = sum(int(a) * int(a) for a in y1)
    n2 = sum(int(b) * int(b) for b in y2)
    if n1 == 0 or n2 == 0:
        return PPB
    cos_ppb = math.isqrt((PPB * PPB * dot * dot) // (n1 * n2))
    return max(0, PPB - min(cos_ppb, PPB))


def error_ppb(labels: np.ndarray, truth: np.ndarray, mask: np.ndarray | None = None) -> int:
    """``e(x, x_t)``: the fraction of differing positions, in ppb (floor).

    Positions where ``mask`` is True are left out of both numerator and denominator.
    """
    a = np.asarray(labels, dtype=np.int64)
    b = np.asarray(truth, dtype=np.int64)
    if a.shape != b.shape:
        raise IntegerDELError(f"label vectors differ in shape: {a.shape} vs {b.shape}")
    keep = np.ones(a.shape, dtype=bool) if mask is None else ~np.asarray(mask, dtype=bool)
    total = int(keep.sum())
    if total == 0:
        return 0
    wrong = int(((a != b) & keep).sum())
    return (wrong * PPB) // total


# ---------------------------------------------------------------------------
# Quantisation (float -> integer); floats live only on this side of the line
# ---------------------------------------------------------------------------
def quantize(
    w1: np.ndarray,
    b1: np.ndarray,
    w2: np.ndarray,
    b2: np.ndarray,
    *,
    m: int,
    num_classes: int,
    encoding: str = "value",
    weight_bits: int = 12,
    hidden_bits: int = 30,
    config: Mapping[str, Any] | None = None,
) -> IntegerDEL:
    """Quantise a float MLP to an ``IntegerDEL``.

    Each layer gets a power-of-two scale so its largest weight uses
    ``weight_bits`` bits; its bias shares the layer's scale (it may use up to
    ``MAX_BIAS_BITS``). The hidden activations are shifted right only as far as
    needed for their worst case over all inputs to fit ``hidden_bits`` bits and
    for the output to fit int64, so the integer network adds no rounding beyond
    the weights'. ReLU and the final normalisation are scale-invariant, so only
    relative rounding error remains.
    """
    if not 2 <= weight_bits <= MAX_WEIGHT_BITS - 1:
        raise IntegerDELError(f"weight_bits must be 2..{MAX_WEIGHT_BITS - 1}")
    if encoding not in ENCODINGS:
        raise IntegerDELError(f"unknown DEL encoding {encoding!r}; expected one of {ENCODINGS}")
    w1 = np.asarray(w1, dtype=np.float64)
    b1 = np.asarray(b1, dtype=np.float64)
    w2 = np.asarray(w2, dtype=np.float64)
    b2 = np.asarray(b2, dtype=np.float64)
    e1 = min(
        _pow2_exponent(np.abs(w1).max(initial=0.0), weight_bits),
        _pow2_exponent(np.abs(b1).max(initial=0.0), MAX_BIAS_BITS - 2),
    )
    w1q = np.round(w1 * 2.0**e1).astype(np.int64)
    b1q = np.round(b1 * 2.0**e1).astype(np.int64)
    worst = _worst_pre(w1q, b1q, encoding, m, num_classes)
    shift1 = max(0, worst.bit_length() - hidden_bits)
    # The hidden layer's integer scale is 2^(e1 - shift1); b2 must live on the same scale
    # as W2q @ h, i.e. 2^(e2 + e1 - shift1).
    e2 = _pow2_exponent(np.abs(w2).max(initial=0.0), weight_bits)
    w2q = np.round(w2 * 2.0**e2).astype(np.int64)
    shift1, b2q = _fit_output_bias(w1q, b1q, w2q, b2, e1, e2, shift1, encoding, m, num_classes)
    cfg = dict(config or {})
    cfg.update({"weight_bits": weight_bits, "hidden_bits": hidden_bits})
    return IntegerDEL(
        m=m,
        num_classes=num_classes,
        hidden=w1q.shape[0],
        n=w2q.shape[0],
        encoding=encoding,
        w1=w1q,
        b1=b1q,
        w2=w2q,
        b2=b2q,
        shift1=shift1,
        config=cfg,
    )


def _fit_output_bias(
    w1q: np.ndarray, b1q: np.ndarray, w2q: np.ndarray, b2: np.ndarray, e1: int, e2: int, shift1: int,
    encoding: str, m: int, num_classes: int,
) -> tuple[int, np.ndarray]:
    """The least hidden shift (from ``shift1`` up) at which b2 and the worst output fit their bits.

    The hidden layer's integer scale is 2^(e1 - shift1); b2 must live on the same scale as
    W2q @ h, i.e. 2^(e2 + e1 - shift1), so a larger shift shrinks both.
    """
    while True:
        b2q_f = np.round(b2 * 2.0 ** (e2 + e1 - shift1))
        b2_fits = b2q_f.size == 0 or float(np.abs(b2q_f).max()) < 2.0 ** (MAX_BIAS_BITS - 1)
        b2q = np.clip(b2q_f, -(2**62), 2**62).astype(np.int64)
        if b2_fits and _worst_out(w1q, b1q, w2q, b2q, encoding, m, num_classes, shift1) < INT64_SAFE:
            return shift1, b2q
        if shift1 >= 62:
            raise IntegerDELError("cannot quantise: output bias too large for any hidden shift")
        shift1 += 1


def _pow2_exponent(max_abs: float, bits: int) -> int:
    """Largest e such that ``max_abs * 2^e < 2^(bits-1)``."""
    if max_abs <= 0.0:
        return 0
    return (bits - 1) - math.frexp(max_abs)[1]


# ---------------------------------------------------------------------------
# An untrained consensus DEL: a random projection of one-hot(x)
# ---------------------------------------------------------------------------
def random_projection_del(m: int, num_classes: int, *, n: int = 256, seed: int = 0) -> IntegerDEL:
    """The MLP set up to compute a random projection of one-hot(x), exactly, in integers.

    ``W1`` is Gaussian (n x m*C); ``b1`` is each unit's worst-case |pre-activation| so
    ReLU never clips; ``W2`` is the identity and ``b2 = -b1``. By Johnson–Lindenstrauss
    ``1 - cos`` tracks the label error (docs/design.md §9), with no training and no torch; the
    seed regenerates the floats. ``chain``'s devnet and the problem kit use it.
    """
    rng = np.random.default_rng(seed)
    w1 = rng.standard_normal((n, m * num_classes)) / np.sqrt(m)
    b1 = np.abs(w1).reshape(n, m, num_classes).max(axis=2).sum(axis=1) + 1.0
    return quantize(w1, b1, np.eye(n), -b1, m=m, num_classes=num_classes, encoding="onehot", weight_bits=12,
                    config={"kind": "random-projection", "seed": seed})


# ---------------------------------------------------------------------------
# Artifact bytes: one safetensors file, config in its metadata
# ---------------------------------------------------------------------------
INT_TENSORS: Final[tuple[str, ...]] = ("int.w1", "int.b1", "int.w2", "int.b2")


def integer_del_to_bytes(model: IntegerDEL, extra: Mapping[str, np.ndarray] | None = None) -> bytes:
    """Serialise to safetensors bytes. Weights are stored as int8 when they fit, else int16;
    biases as int64 (they live on the sums' scale).

    ``extra`` may carry float weights for analysis; they never reach consensus.
    """
    from safetensors.numpy import save

    tensors: dict[str, np.ndarray] = {
        "int.w1": _narrowest(model.w1),
        "int.b1": model.b1.astype(np.int64),
        "int.w2": _narrowest(model.w2),
        "int.b2": model.b2.astype(np.int64),
    }
    for k, v in (extra or {}).items():
        if k in tensors:
            raise IntegerDELError(f"extra tensor name {k!r} collides with an integer tensor")
        tensors[k] = np.ascontiguousarray(v)
    meta = {
        "version": ARTIFACT_VERSION,
        "m": model.m,
        "num_classes": model.num_classes,
        "hidden": model.hidden,
        "n": model.n,
        "encoding": model.encoding,
        "shift1": model.shift1,
        "output_scale": OUTPUT_SCALE,
        "config": dict(model.config),
    }
    return save(tensors, metadata={"daimon_del": json.dumps(meta, sort_keys=True)})


def _narrowest(w: np.ndarray) -> np.ndarray:
    """int8 if every weight fits (halves a one-hot DEL's file), else int16."""
    if w.size == 0 or int(np.abs(w).max()) < 128:
        return w.astype(np.int8)
    return w.astype(np.int16)


def integer_del_from_bytes(data: bytes) -> IntegerDEL:
    """Parse artifact bytes (never unpickles); raise ``IntegerDELError`` if malformed."""
    from safetensors import SafetensorError
    from safetensors.numpy import load

    try:
        tensors = load(data)
        meta = _read_metadata(data)
    except (SafetensorError, ValueError, KeyError, TypeError) as exc:
        raise IntegerDELError(f"malformed DEL artifact: {exc}") from exc
    if meta.get("version") != ARTIFACT_VERSION:
        raise IntegerDELError(f"unsupported DEL artifact version {meta.get('version')!r}")
    if meta.get("output_scale") != OUTPUT_SCALE:
        raise IntegerDELError("DEL artifact output scale differs from this node's")
    missing = [k for k in INT_TENSORS if k not in tensors]
    if missing:
        raise IntegerDELError(f"DEL artifact lacks tensors {missing}")
    for k in INT_TENSORS:
        if tensors[k].dtype.kind != "i":
            raise IntegerDELError(f"DEL tensor {k} must be integer, not {tensors[k].dtype}")
    try:
        return IntegerDEL(
            m=int(meta["m"]),
            num_classes=int(meta["num_classes"]),
            hidden=int(meta["hidden"]),
            n=int(meta["n"]),
            encoding=str(meta["encoding"]),
            w1=tensors["int.w1"].astype(np.int64),
            b1=tensors["int.b1"].astype(np.int64),
            w2=tensors["int.w2"].astype(np.int64),
            b2=tensors["int.b2"].astype(np.int64),
            shift1=int(meta["shift1"]),
            config=dict(meta.get("config", {})),
        )
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, IntegerDELError):
            raise
        raise IntegerDELError(f"malformed DEL artifact metadata: {exc}") from exc


def _read_metadata(data: bytes) -> dict[str, Any]:
    if len(data) < 8:
        raise ValueError("artifact shorter than its header")
    header_len = int.from_bytes(data[:8], "little")
    if header_len > len(data) - 8:
        raise ValueError("artifact header length exceeds its size")
    header = json.loads(data[8 : 8 + header_len])
    meta = header.get("__metadata__") or {}
    raw = meta["daimon_del"]
    parsed = json.loads(raw)
    if not isinstance(parsed, dict):
        raise ValueError("DEL metadata is not an object")
    return parsed
