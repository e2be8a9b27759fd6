"""The float DEL: an MLP ``labels -> encode -> W1 -> ReLU -> W2 -> unit-normalise``.

The first layer is stored row-wise as an embedding table (one row per input
column), so a label vector is an embedding *bag*: ``W1 enc(x) = sum of rows``.
A perturbation of ``x_t`` then costs only its changed positions:

    W1 enc(x) = W1 enc(x_t) + sum_{i changed} (row(i, x_i) - row(i, x_t_i))

Training evaluates ``f(x_t)`` once per batch and every perturbed vector
through that identity, which is what makes training on 2 CPU cores feasible
(the paper's dense 10,000 x 1,024 first layer runs ~2 steps/s there).

Encodings (the same meaning as in ``integer.py``): ``"onehot"`` — row
``i*C + c`` with weight 1; ``"value"`` (the paper's) — row ``i`` with weight
``x_i``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .data import Changes


@dataclass
class DELConfig:
    """Everything that defines one DEL and its training run (saved in each artifact)."""

    # --- model ---
    m: int = 10_000  # test labels (input positions)
    num_classes: int = 10  # C
    hidden: int = 256  # first-layer width (paper: 1,024)
    n: int = 256  # embedding size (paper: 256)
    encoding: str = "onehot"  # "onehot" (ours) or "value" (paper)
    # --- training ---
    seed: int = 0
    steps: int = 3_000
    batch_size: int = 256
    lr: float = 2e-3  # peak Adam learning rate
    lr_min_frac: float = 0.05  # cosine decays to lr * lr_min_frac
    warmup_steps: int = 50
    low_error_frac: float = 0.75  # share of samples drawn with true error in [0, low_error_max]
    low_error_max: float = 0.25
    band_weight: float = 2.0  # loss weight of samples with 5% <= e < 20% (others 1)
    threads: int = 2  # torch.set_num_threads
    max_seconds: float = 0.0  # stop early after this wall time (0: no limit)
    # --- quantisation ---
    weight_bits: int = 15  # int16 storage either way; 15 bits keeps |d_int - d| ~1e-5

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "DELConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    @property
    def input_rows(self) -> int:
        return self.m * self.num_classes if self.encoding == "onehot" else self.m


def encode_rows(positions: np.ndarray, labels: np.ndarray, cfg: DELConfig) -> tuple[np.ndarray, np.ndarray]:
    """Rows of W1 (as an embedding table) and their weights for (position, label) pairs."""
    if cfg.encoding == "onehot":
        return positions * cfg.num_classes + labels, np.ones(positions.shape, dtype=np.float32)
    return positions, labels.astype(np.float32)


class DEL(nn.Module):
    """The float DEL; ``forward`` compares perturbations of ``x_t`` to ``f(x_t)``."""

    def __init__(self, cfg: DELConfig) -> None:
        super().__init__()
        assert cfg.encoding in ("onehot", "value"), f"unknown encoding {cfg.encoding!r}"
        self.cfg = cfg
        # A label vector's pre-activation sums m rows: scale so it starts ~N(0, 1).
        per_pos = cfg.m * (1 if cfg.encoding == "onehot" else (cfg.num_classes - 1) ** 2 / 3)
        self.w1 = nn.Parameter(torch.randn(cfg.input_rows, cfg.hidden) / math.sqrt(per_pos))
        self.b1 = nn.Parameter(torch.zeros(cfg.hidden))
        self.fc2 = nn.Linear(cfg.hidden, cfg.n)

    # -- pieces ------------------------------------------------------------
    def pre_activation(self, rows: torch.Tensor, weights: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        """``W1 enc(x) + b1`` for a bag of rows per sample."""
        z = F.embedding_bag(rows, self.w1, offsets, mode="sum", per_sample_weights=weights)
        return z + self.b1

    def head(self, z: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.fc2(F.relu(z)), dim=-1)

    def embed(self, labels: torch.Tensor) -> torch.Tensor:
        """``f(x)`` for full label vectors ``(B, m)`` -> ``(B, n)`` unit vectors."""
        b, m = labels.shape
        assert m == self.cfg.m, f"label vectors have {m} positions, model expects {self.cfg.m}"
        pos = torch.arange(m).expand(b, m)
        if self.cfg.encoding == "onehot":
            rows, w = (pos * self.cfg.num_classes + labels).reshape(-1), None
        else:
            rows, w = pos.reshape(-1), labels.reshape(-1).to(self.w1.dtype)
        offsets = torch.arange(b) * m
        z = F.embedding_bag(rows, self.w1, offsets, mode="sum", per_sample_weights=w) + self.b1
        return self.head(z)

    # -- training forward ----------------------------------------------------
    def forward(self, batch: "DeltaBatch", targets: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Distances ``d(f(x_s), f(x_t))`` for each perturbation ``s``; L1 loss vs ``targets``."""
        # One bag for x_t (bag 0) and one per sample's row deltas: a single backward pass.
        bags = F.embedding_bag(batch.rows, self.w1, batch.offsets, mode="sum", per_sample_weights=batch.weights)
        z_t = bags[0:1] + self.b1
        y = self.head(torch.cat([z_t, z_t + bags[1:]]))
        d = distance(y[1:], y[0:1])
        if targets is None:
            return d, None
        err = (d - targets).abs()
        loss = (err * batch.loss_weights).sum() / batch.loss_weights.sum()
        return d, loss


def distance(y: torch.Tensor, y_ref: torch.Tensor) -> torch.Tensor:
    """``d = 1 - cos`` for unit vectors, or 1 when the dot product is negative."""
    cos = (y * y_ref).sum(-1)
    return torch.where(cos >= 0, 1.0 - cos, torch.ones_like(cos))


@dataclass(frozen=True)
class DeltaBatch:
    """Tensors for ``DEL.forward``: ``x_t``'s rows and each sample's row deltas."""

    rows: torch.Tensor  # x_t's rows, then per sample its new rows (+w) and old rows (-w)
    weights: torch.Tensor
    offsets: torch.Tensor  # bag starts: bag 0 is x_t, bag s+1 is sample s's delta
    loss_weights: torch.Tensor

    @classmethod
    def build(cls, x_t: np.ndarray, changes: Changes, cfg: DELConfig) -> "DeltaBatch":
        m = x_t.shape[0]
        base_rows, base_w = encode_rows(np.arange(m), x_t, cfg)
        new_rows, new_w = encode_rows(changes.positions, changes.new_labels, cfg)
        old_rows, old_w = encode_rows(changes.positions, x_t[changes.positions], cfg)
        # Sample s's segment is [new rows, old rows]: entry j of sample s goes to
        # j + offsets[s] (new) and j + offsets[s] + k_s (old) — no sort needed.
        k = np.diff(changes.offsets)
        start = np.repeat(changes.offsets[:-1], k)
        at_new = np.arange(new_rows.shape[0]) + start
        at_old = at_new + np.repeat(k, k)
        total = m + 2 * new_rows.shape[0]
        rows = np.empty(total, dtype=np.int64)
        weights = np.empty(total, dtype=np.float32)
        rows[:m], weights[:m] = base_rows, base_w
        rows[m + at_new], weights[m + at_new] = new_rows, new_w
        rows[m + at_old], weights[m + at_old] = old_rows, -old_w
        offsets = np.concatenate([[0], m + 2 * changes.offsets[:-1]])
        e = changes.errors
        lw = np.where((e >= 0.05) & (e < 0.20), cfg.band_weight, 1.0)
        return cls(
            rows=torch.from_numpy(rows),
            weights=torch.from_numpy(weights),
            offsets=torch.from_numpy(offsets),
            loss_weights=torch.from_numpy(lw.astype(np.float32)),
        )


def float_weights(model: DEL) -> dict[str, np.ndarray]:
    """The float weights in ``integer.py``'s layout: W1 is (hidden, d_in)."""
    return {
        "w1": model.w1.detach().numpy().T.copy(),
        "b1": model.b1.detach().numpy().copy(),
        "w2": model.fc2.weight.detach().numpy().copy(),
        "b2": model.fc2.bias.detach().numpy().copy(),
    }


def load_float_weights(model: DEL, w: dict[str, np.ndarray]) -> None:
    with torch.no_grad():
        model.w1.copy_(torch.from_numpy(np.ascontiguousarray(w["w1"].T)))
        model.b1.copy_(torch.from_numpy(w["b1"]))
        model.fc2.weight.copy_(torch.from_numpy(w["w2"]))
        model.fc2.bias.copy_(torch.from_numpy(w["b2"]))
