"""Attacks on a published DEL: with f's weights and y_t = f(x_t) public, how close
can an attacker get to y_t, and how many hidden labels does that reveal?

- ``attack`` (greedy coordinate search): the first layer is linear in the
  one-hot input, so the effect of any single label change on the hidden
  pre-activation is one column difference. Each round scores all m(C-1)
  single changes to first order (one gradient, one matrix-vector product),
  evaluates the exact distance of the best ``candidates`` of them, and applies
  the best few at distinct positions if they lower d. It is reusable by a
  "cheater" improver: ``attack(target, y_t, start_labels, ...) -> labels``.
- ``relaxed_attack``: gradient descent on a softmax-relaxed label vector.
- ``inverse_attack``: the paper's learned inverse g: y -> x trained on (f(x), x)
  pairs, RANDOM (uniform labels) or NEARBY (GENERATEDATA around a public
  model's predictions); returns the error of argmax g(y_t) per epoch.
- ``inspection_attack``: reads x_t straight off W1's columns (no queries).
- ``brute_force_p``: the paper's success probability of random guessing,
  p = I_{sin^2 beta}((n-1)/2, 1/2) with cos beta = 1 - eps.

Everything here is analysis (float64, torch where convenient); the exact
distance reported for a DEL is always ``f_int``'s.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

from .baseline import RandomProjection
from .integer import PPB, IntegerDEL, distance_ppb, error_ppb, f_int


# ---------------------------------------------------------------------------
# A float view of any embedding whose first layer is linear in one-hot input
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Target:
    """``y(x) = W2 act(W1 onehot(x) + b1) + b2``; ``act`` is ReLU or identity (baseline)."""

    w1t: np.ndarray  # (m*C, H) rows of W1 for (position, class), float64
    b1: np.ndarray
    w2: np.ndarray  # (n, H)
    b2: np.ndarray
    relu: bool
    m: int
    num_classes: int

    @classmethod
    def from_integer(cls, model: IntegerDEL) -> "Target":
        """The integer DEL with its scales divided out (exact up to the shift's floor)."""
        if model.encoding == "onehot":
            w1t = model.w1.T.astype(np.float64)
        else:  # value encoding: column (i, c) of the one-hot view is c * W1[:, i]
            w1t = (model.w1.T[:, None, :] * np.arange(model.num_classes)[None, :, None]).reshape(-1, model.hidden)
            w1t = w1t.astype(np.float64)
        scale = 2.0**-model.shift1
        return cls(w1t * scale, model.b1 * scale, model.w2.astype(np.float64), model.b2.astype(np.float64), True,
                   model.m, model.num_classes)

    @classmethod
    def from_baseline(cls, base: RandomProjection) -> "Target":
        n = base.n
        return cls(base.rows, np.zeros(n), np.eye(n), np.zeros(n), False, base.m, base.num_classes)

    def cols(self, labels: np.ndarray) -> np.ndarray:
        return np.arange(self.m) * self.num_classes + labels

    def pre(self, labels: np.ndarray) -> np.ndarray:
        return self.w1t[self.cols(labels)].sum(axis=0) + self.b1

    def out(self, z: np.ndarray) -> np.ndarray:
        """Unnormalised output for pre-activations ``z`` (..., H)."""
        h = np.maximum(z, 0.0) if self.relu else z
        return h @ self.w2.T + self.b2

    def embed(self, labels: np.ndarray) -> np.ndarray:
        return self.out(self.pre(labels))


def unit(v: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(v, axis=-1, keepdims=True)
    return v / np.where(norm == 0, 1.0, norm)


def float_distance(out: np.ndarray, y_t_unit: np.ndarray) -> np.ndarray:
    cos = unit(out) @ y_t_unit
    return np.where(cos >= 0, 1.0 - cos, 1.0)


# ---------------------------------------------------------------------------
# (a) greedy coordinate search
# ---------------------------------------------------------------------------
def as_target(model: "Target | IntegerDEL | RandomProjection") -> Target:
    """Accept the consensus ``IntegerDEL``, the baseline, or an already built ``Target``."""
    if isinstance(model, Target):
        return model
    if isinstance(model, IntegerDEL):
        return Target.from_integer(model)
    if isinstance(model, RandomProjection):
        return Target.from_baseline(model)
    raise TypeError(f"cannot attack a {type(model).__name__}")


def attack(
    target: "Target | IntegerDEL | RandomProjection",
    y_t: np.ndarray | tuple[int, ...],
    start_labels: np.ndarray,
    *,
    max_rounds: int = 2_000,
    max_seconds: float = 60.0,
    candidates: int = 256,
    max_candidates: int | None = None,
    tol: float = 1e-9,
) -> np.ndarray:
    """Greedy coordinate search on d(f(x), y_t); returns the best label vector found.

    When none of the ``candidates`` best first-order changes helps, the exact
    evaluation widens (x4, up to ``max_candidates``, default: every single change) before giving up.
    """
    target = as_target(target)
    y = unit(np.asarray(y_t, dtype=np.float64))
    x = np.asarray(start_labels, dtype=np.int64).copy()
    m, c = target.m, target.num_classes
    z = target.pre(x)
    # Minimise the smooth 1 - cos (d clamps to 1 when cos < 0, which would stall a random start).
    d = float(_raw_distance(target.out(z), y))
    apply_k = 16
    deadline = time.perf_counter() + max_seconds
    for _ in range(max_rounds):
        if d <= tol or time.perf_counter() > deadline:
            break
        g = _grad_z(target, z, y)
        cur = target.w1t[target.cols(x)] @ g  # (m,) score of each position's current column
        scores = (target.w1t @ g).reshape(m, c) - cur[:, None]
        scores[np.arange(m), x] = np.inf
        k = min(candidates, scores.size - 1)
        flat = np.argpartition(scores.ravel(), k)[:k]
        pos, cls = np.divmod(flat, c)
        delta = target.w1t[flat] - target.w1t[pos * c + x[pos]]
        d_cand = np.concatenate([_raw_distance(target.out(z[None, :] + delta[i : i + 8192]), y)
                                 for i in range(0, len(delta), 8192)])
        order = np.argsort(d_cand)
        if d_cand[order[0]] >= d:
            cap = scores.size - 1 if max_candidates is None else min(max_candidates, scores.size - 1)
            if k >= cap:
                break
            candidates = min(cap, candidates * 4)  # first order missed: look wider, exactly
            continue
        # Apply the best changes at distinct positions, as many as still help jointly.
        chosen = _distinct(pos[order], d_cand[order] < d)[:apply_k]
        while True:
            idx = order[chosen]
            z_new = z + delta[idx].sum(axis=0)
            d_new = float(_raw_distance(target.out(z_new), y))
            if d_new < d or len(chosen) == 1:
                break
            chosen = chosen[: max(1, len(chosen) // 2)]
        if d_new >= d:
            break
        x[pos[order[chosen]]] = cls[order[chosen]]
        z, d = z_new, d_new
        apply_k = min(256, apply_k * 2) if len(chosen) == apply_k else max(1, len(chosen))
    return x


def _raw_distance(out: np.ndarray, y_t_unit: np.ndarray) -> np.ndarray:
    return 1.0 - unit(out) @ y_t_unit


def _grad_z(target: Target, z: np.ndarray, y: np.ndarray) -> np.ndarray:
    """d(1 - cos(out(z), y)) / dz."""
    o = target.out(z)
    norm = np.linalg.norm(o)
    u = o / norm
    g_out = -(y - (u @ y) * u) / norm
    g_h = target.w2.T @ g_out
    return g_h * (z > 0) if target.relu else g_h


def _distinct(pos: np.ndarray, ok: np.ndarray) -> list[int]:
    seen: set[int] = set()
    out = []
    for i, (p, good) in enumerate(zip(pos.tolist(), ok.tolist())):
        if good and p not in seen:
            seen.add(p)
            out.append(i)
    return out


# ---------------------------------------------------------------------------
# (b) gradient descent on a relaxed input
# ---------------------------------------------------------------------------
def relaxed_attack(
    target: Target,
    y_t: np.ndarray | tuple[int, ...],
    start_labels: np.ndarray | None,
    *,
    steps: int = 300,
    lr: float = 0.1,
    seed: int = 0,
    max_seconds: float = 60.0,
) -> np.ndarray:
    """Minimise d(f(softmax(L)), y_t) over logits L (m, C) with Adam; return argmax labels."""
    import torch

    m, c = target.m, target.num_classes
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(m, c, generator=gen, dtype=torch.float64) * 0.01
    if start_labels is not None:
        logits[torch.arange(m), torch.from_numpy(np.asarray(start_labels, dtype=np.int64))] += 3.0
    logits.requires_grad_(True)
    w1 = torch.from_numpy(target.w1t).reshape(m, c, -1)
    b1, w2, b2 = (torch.from_numpy(a) for a in (target.b1, target.w2, target.b2))
    y = torch.from_numpy(unit(np.asarray(y_t, dtype=np.float64)))
    opt = torch.optim.Adam([logits], lr=lr)
    deadline = time.perf_counter() + max_seconds
    for _ in range(steps):
        p = torch.softmax(logits, dim=1)
        z = torch.einsum("mc,mch->h", p, w1) + b1
        h = torch.relu(z) if target.relu else z
        out = w2 @ h + b2
        loss = 1.0 - (out / out.norm()) @ y
        opt.zero_grad()
        loss.backward()
        opt.step()
        if time.perf_counter() > deadline:
            break
    return logits.detach().argmax(dim=1).numpy().astype(np.int64)


# ---------------------------------------------------------------------------
# (c) the paper's learned inverse
# ---------------------------------------------------------------------------
def inverse_attack(
    target: Target,
    y_t: np.ndarray | tuple[int, ...],
    x_t: np.ndarray,
    center: np.ndarray | None,
    *,
    epochs: int = 10,
    samples_per_epoch: int = 512,
    batch_size: int = 64,
    lr: float = 1e-3,
    seed: int = 0,
) -> tuple[list[float], np.ndarray]:
    """Train g: y -> labels on (f(x), x); return e(argmax g(y_t), x_t) after each epoch
    and the final guess argmax g(y_t).

    ``center=None`` is the paper's RANDOM (uniform label vectors); otherwise
    NEARBY: GENERATEDATA around ``center`` (a public model's predictions).
    ``x_t`` is used only to score the result.
    """
    import torch

    m, c = target.m, target.num_classes
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    n = target.w2.shape[0]
    g = torch.nn.Sequential(torch.nn.Linear(n, 512), torch.nn.ReLU(), torch.nn.Linear(512, m * c))
    opt = torch.optim.Adam(g.parameters(), lr=lr)
    y = torch.from_numpy(unit(np.asarray(y_t, dtype=np.float64))).float()
    errors = []
    for _ in range(epochs):
        xs = _inverse_samples(rng, m, c, samples_per_epoch, center)
        ys = torch.from_numpy(unit(np.stack([target.embed(x) for x in xs]))).float()
        xs_t = torch.from_numpy(xs)
        for i in range(0, samples_per_epoch, batch_size):
            logits = g(ys[i : i + batch_size]).reshape(-1, m, c)
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, c), xs_t[i : i + batch_size].reshape(-1))
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            guess = g(y[None]).reshape(m, c).argmax(dim=1).numpy()
        errors.append(float((guess != x_t).mean()))
    return errors, guess.astype(np.int64)


def _inverse_samples(rng: np.random.Generator, m: int, c: int, count: int, center: np.ndarray | None) -> np.ndarray:
    if center is None:
        return rng.integers(0, c, size=(count, m))
    out = np.repeat(center[None, :], count, axis=0)
    for row in out:
        v = int(rng.integers(1, m + 1))
        pos = rng.choice(m, size=v, replace=False)
        row[pos] = rng.integers(0, c, size=v)
    return out


# ---------------------------------------------------------------------------
# (d) weight inspection: no queries at all
# ---------------------------------------------------------------------------
def inspection_attack(target: Target) -> np.ndarray:
    """Read x_t off the first layer's columns, without evaluating f once.

    During training every sample in which position i is unchanged pushes the
    row of (i, x_t_i) by the same batch gradient, so the true-class rows drift
    together along a shared direction, and a DEL that "counts" changed positions
    needs exactly that shared offset. Per position, centre the C rows, take the
    top principal direction of all residuals, and pick the class that is the
    outlier along it (the sign is chosen by which tail is more isolated).
    Against an untrained random projection this is chance (1/C).
    """
    m, c = target.m, target.num_classes
    w = target.w1t.reshape(m, c, -1)
    r = w - w.mean(axis=1, keepdims=True)
    flat = r.reshape(m * c, -1)
    _, vecs = np.linalg.eigh(flat.T @ flat)
    proj = r @ vecs[:, -1]  # (m, C)
    srt = np.sort(proj, axis=1)
    gap_hi = float((srt[:, -1] - srt[:, -2]).mean())
    gap_lo = float((srt[:, 1] - srt[:, 0]).mean())
    return (proj.argmax(axis=1) if gap_hi >= gap_lo else proj.argmin(axis=1)).astype(np.int64)


# ---------------------------------------------------------------------------
# Starts and scoring
# ---------------------------------------------------------------------------
def nearby_start(x_t: np.ndarray, num_classes: int, error: float, seed: int) -> np.ndarray:
    """A stand-in for a public model's predictions: x_t with ``error`` of positions wrong."""
    rng = np.random.default_rng(seed)
    m = x_t.shape[0]
    k = round(error * m)
    pos = rng.choice(m, size=k, replace=False)
    x = x_t.copy()
    x[pos] = (x_t[pos] + rng.integers(1, num_classes, size=k)) % num_classes
    return x


def random_start(m: int, num_classes: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, num_classes, size=m)


@dataclass(frozen=True)
class AttackRow:
    embedding: str
    method: str
    start: str
    start_error: float
    start_d: float
    end_d: float
    end_error: float
    seconds: float

    @property
    def recovered(self) -> float:
        return 1.0 - self.end_error


def score_del(model: IntegerDEL, y_t: tuple[int, ...], labels: np.ndarray) -> float:
    return distance_ppb(f_int(model, labels), y_t) / PPB


def run_attack_row(
    embedding: str,
    method: str,
    start: str,
    distance_fn,
    attack_fn,
    start_labels: np.ndarray,
    x_t: np.ndarray,
) -> AttackRow:
    """Time one attack and score it: ``distance_fn(labels)`` is the exact d to y_t."""
    t0 = time.perf_counter()
    end = attack_fn(start_labels)
    seconds = time.perf_counter() - t0
    return AttackRow(
        embedding=embedding,
        method=method,
        start=start,
        start_error=error_ppb(start_labels, x_t) / PPB,
        start_d=float(distance_fn(start_labels)),
        end_d=float(distance_fn(end)),
        end_error=error_ppb(end, x_t) / PPB,
        seconds=seconds,
    )


# ---------------------------------------------------------------------------
# Brute force: the paper's success probability (Figure 3)
# ---------------------------------------------------------------------------
PAPER_FIG3 = {(0.10, 32): 6.12e-13, (0.10, 256): 3.33e-93}  # printed in the paper


def brute_force_p(eps: float, n: int) -> float:
    """p = I_{sin^2 beta}((n-1)/2, 1/2), cos beta = 1 - eps (the paper's formula, as printed).

    For eps <= 1 this is twice the fraction of the unit sphere within angle
    beta of y_t (the cap fraction is (1/2) I_{sin^2 beta}); we implement the
    paper's formula and report its values beside the paper's printed ones.
    """
    from scipy.special import betainc

    if not 0.0 < eps <= 1.0:
        raise ValueError("eps must lie in (0, 1]")
    cos_b = 1.0 - eps
    return float(betainc((n - 1) / 2.0, 0.5, 1.0 - cos_b * cos_b))


def cap_fraction_integral(eps: float, n: int, dps: int = 40, pieces: int = 96) -> float:
    """Independent check: the sphere-cap fraction by quadrature of sin^(n-2) theta (mpmath).

    The integrand is steep near beta for large n, so [0, beta] is cut into
    ``pieces`` intervals; the normaliser is the closed form
    sqrt(pi) Gamma((n-1)/2) / Gamma(n/2). The paper's p is twice this.
    """
    import mpmath

    with mpmath.workdps(dps):
        beta = mpmath.acos(1 - mpmath.mpf(eps))
        num = mpmath.quad(lambda t: mpmath.sin(t) ** (n - 2), mpmath.linspace(0, beta, pieces + 1))
        den = mpmath.sqrt(mpmath.pi) * mpmath.gamma(mpmath.mpf(n - 1) / 2) / mpmath.gamma(mpmath.mpf(n) / 2)
        return float(num / den)


def brute_force_p_hyp2f1(eps: float, n: int, dps: int = 50) -> float:
    """Independent check: I_x(a, 1/2) = x^a (1-x)^(1/2) / (a B(a, 1/2)) 2F1(a+1/2, 1; a+1; x)."""
    import mpmath

    with mpmath.workdps(dps):
        c = 1 - mpmath.mpf(eps)
        x = 1 - c * c
        a, b = mpmath.mpf(n - 1) / 2, mpmath.mpf(1) / 2
        val = x**a * (1 - x) ** b / (a * mpmath.beta(a, b)) * mpmath.hyp2f1(a + b, 1, a + 1, x)
        return float(val)


def unit_sphere_log10(value: float) -> float:
    return math.log10(value) if value > 0 else float("-inf")
