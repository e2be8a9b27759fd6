"""The paper's Figures 1–5 as PNGs (matplotlib, Agg backend).

1. training and test loss per step;
2. true error e vs DEL distance d (``f_int``), with the baseline beside it;
3. brute-force success probability p vs eps for several n, with the paper's
   printed values beside ours (they differ: see ``fig3_table``);
4. the learned-inverse attack's error per epoch, NEARBY vs RANDOM;
5. the reward R(d, d_c) = I_{1-d}(a, 1/2) - I_{1-d_c}(a, 1/2) for a = 3.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .attack import PAPER_FIG3, brute_force_p

FIG3_NS: tuple[int, ...] = (8, 16, 32, 64, 128, 256)
FIG5_A = 3.0


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def fig1_loss(history: dict[str, Any], path: Path) -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    for key, label in (("train_loss", "training loss"), ("test_loss", "test loss (held-out GENERATEDATA)")):
        pts = history.get(key) or []
        if pts:
            steps, vals = zip(*pts)
            ax.plot(steps, vals, label=label)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("mean |e - d|")
    ax.set_title("Figure 1: DEL training and test loss")
    ax.legend()
    return _save(fig, path)


def fig2_scatter(e: np.ndarray, d_del: np.ndarray, d_base: np.ndarray, path: Path) -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 5))
    ax.scatter(e, d_base, s=4, alpha=0.5, label="baseline (random projection)")
    ax.scatter(e, d_del, s=4, alpha=0.6, label="DEL (f_int)")
    lim = max(float(e.max()), float(d_del.max()), float(d_base.max()))
    ax.plot([0, lim], [0, lim], "k--", lw=0.8)
    ax.set_xlabel("true error e(x, x_t)")
    ax.set_ylabel("distance d(f(x), f(x_t))")
    ax.set_title("Figure 2: e vs d on held-out vectors")
    ax.legend()
    return _save(fig, path)


def fig3_table() -> list[dict[str, float]]:
    """Our p beside the paper's printed p at the points the paper quotes."""
    return [{"eps": eps, "n": n, "ours": brute_force_p(eps, n), "paper": printed} for (eps, n), printed in PAPER_FIG3.items()]


def fig3_bruteforce(path: Path) -> Path:
    plt = _plt()
    eps = np.linspace(0.01, 0.5, 60)
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for n in FIG3_NS:
        ax.semilogy(eps, [brute_force_p(float(e), n) for e in eps], label=f"n = {n}")
    caption = "; ".join(f"eps={r['eps']}, n={r['n']}: ours {r['ours']:.4g}, paper {r['paper']:.3g}" for r in fig3_table())
    ax.set_ylim(top=2.0)
    ax.set_xlabel("eps (allowed distance 1 - cos beta)")
    ax.set_ylabel("p = I_{sin^2 beta}((n-1)/2, 1/2)")
    ax.set_title("Figure 3: brute-force success probability")
    ax.legend(fontsize=8)
    fig.text(0.01, 0.005, caption, fontsize=6.5)
    return _save(fig, path)


def fig4_inverse(nearby: list[float], random: list[float], path: Path) -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(range(1, len(nearby) + 1), nearby, marker="o", label="NEARBY")
    ax.plot(range(1, len(random) + 1), random, marker="s", label="RANDOM")
    ax.set_xlabel("epoch")
    ax.set_ylabel("error of argmax g(y_t) vs x_t")
    ax.set_title("Figure 4: inverse-mapping attack")
    ax.legend()
    return _save(fig, path)


def reward_curve(d: np.ndarray, d_c: float, a: float = FIG5_A) -> np.ndarray:
    """R(d, d_c) = I_{1-d}(a, 1/2) - I_{1-d_c}(a, 1/2) (analysis float; consensus uses decimal)."""
    from scipy.special import betainc

    return betainc(a, 0.5, 1.0 - d) - betainc(a, 0.5, 1.0 - d_c)


def fig5_reward(path: Path) -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    for d_c in (0.2, 0.4, 0.6, 0.8, 1.0):
        d = np.linspace(0.0, d_c, 200)
        ax.plot(d, reward_curve(d, d_c), label=f"d_c = {d_c}")
    ax.set_xlabel("d")
    ax.set_ylabel("R(d, d_c)")
    ax.set_title(f"Figure 5: reward for a = {FIG5_A:g}")
    ax.legend()
    return _save(fig, path)


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    fig.savefig(path, dpi=110)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


def make_figures(
    out: Path, art: Any, x_t: np.ndarray, inverse_epochs: int = 8, seed: int = 0, pairs_per_band: int = 100
) -> list[Path]:
    """All five figures for a trained artifact and its x_t (Figures 3 and 5 need neither)."""
    from .attack import Target, inverse_attack, nearby_start
    from .baseline import RandomProjection
    from .evaluate import del_distances, make_eval_set

    out = Path(out)
    paths = [fig1_loss(art.history, out / "fig1_loss.png")]
    bands = make_eval_set(x_t, art.integer.num_classes, pairs_per_band, seed)
    base = RandomProjection(art.integer.m, art.integer.num_classes, art.integer.n, seed=seed)
    e = np.concatenate([b.a.errors for b in bands])
    d_del = np.concatenate([del_distances(art.integer, x_t, b.a) for b in bands])
    d_base = np.concatenate([base.distances(x_t, b.a) for b in bands])
    paths.append(fig2_scatter(e, d_del, d_base, out / "fig2_e_vs_d.png"))
    paths.append(fig3_bruteforce(out / "fig3_bruteforce.png"))
    from .integer import f_int

    target, y_t = Target.from_integer(art.integer), f_int(art.integer, x_t)
    center = nearby_start(x_t, art.integer.num_classes, 0.15, seed)
    near, _ = inverse_attack(target, y_t, x_t, center, epochs=inverse_epochs, seed=seed)
    rand, _ = inverse_attack(target, y_t, x_t, None, epochs=inverse_epochs, seed=seed)
    paths.append(fig4_inverse(near, rand, out / "fig4_inverse.png"))
    paths.append(fig5_reward(out / "fig5_reward.png"))
    return paths
