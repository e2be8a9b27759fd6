"""Soundness of the sealed holdout (issue 9): who vests, measured, at digits and FashionMNIST scale.

For each scale and holdout size m_h, over many seeds, with the problem kit's
DEL (an untrained random projection, n = 256, exact ``f_int``) on x_t and the
chain's own rule (``e_h + margin < e_confirmed`` and ``|mean d - e_h| <= bound``):

- A (confirmed) has true error e_A; an honest B is better by ``gap``: it fixes
  some of A's errors and makes a few new ones (30% of B's errors are on items A
  got right), so the two are *paired* on the same Z_h, as on chain.
- The cheater takes A's labels on Z, runs ``del_embed.attack`` (greedy white-box
  search on f_int) to drive d to ~0, and tables them; on Z_h it answers A's
  labels (it does not know x_h). Variants: ``gamble k``: it also flips k random
  holdout labels hoping to get lucky; ``better``: its Z_h labels are an honest
  model better than A by the detectable gap, but it claims the attacked d ~ 0;
  ``next season``: the plain lookup in a later season, where the chain's
  baseline is A's error on the previous season's (independent) holdout set.

Prints the false-rejection rate of honest models (by gap), the cheater's pass
rate, and the rewards: the cheater's provisional and vested, the honest
improver's vested fraction. ``--quick`` runs fewer seeds.

Scales: digits (m = 539 test labels of the kit's split, m_h of 180 or 359
holdout labels, the real digits labels) and FashionMNIST (the 10,000 test
labels of /work/shared/datasets/fashion-mnist: x_h the first m_h, x_t the
rest); FashionMNIST is skipped with a note when the file is absent.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from chain.rewards import improvement_reward  # noqa: E402
from del_embed.attack import Target, attack  # noqa: E402
from del_embed.integer import PPB, distance_ppb, error_ppb, f_int  # noqa: E402
from del_embed.integer import random_projection_del  # noqa: E402

FMNIST = Path(os.environ.get("FMNIST_LABELS", "/work/shared/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz"))
C = 10
NEW_SHARE = 0.3  # share of B's errors on items A got right
REWARD_A, SCALE = 3, 10**18


@dataclass(frozen=True)
class Rule:
    margin_ppb: int
    bound_ppb: int

    def vests(self, e_h: int, baseline: int, mean_d: int) -> bool:
        return e_h + self.margin_ppb < baseline and abs(mean_d - e_h) <= self.bound_ppb


def wrong_mask(rng: np.random.Generator, n: int, e: float) -> np.ndarray:
    return rng.random(n) < e


def paired_masks(rng: np.random.Generator, n: int, e_a: float, e_b: float) -> tuple[np.ndarray, np.ndarray]:
    """Errors of A (rate e_a) and of a better B (rate e_b), B's errors mostly a subset of A's."""
    a = wrong_mask(rng, n, e_a)
    q = NEW_SHARE * e_b / (1 - e_a)  # P(B wrong | A right)
    p = (e_b - q * (1 - e_a)) / e_a  # P(B wrong | A wrong)
    u = rng.random(n)
    b = np.where(a, u < p, u < q)
    return a, b


def apply_errors(rng: np.random.Generator, truth: np.ndarray, mask: np.ndarray) -> np.ndarray:
    out = truth.copy()
    out[mask] = (truth[mask] + rng.integers(1, C, int(mask.sum()))) % C
    return out


def with_errors_like(rng: np.random.Generator, truth: np.ndarray, mask: np.ndarray, base: np.ndarray,
                     base_mask: np.ndarray) -> np.ndarray:
    """Labels wrong exactly on ``mask``; where ``base`` is wrong too, keep base's wrong label (paired models)."""
    out = apply_errors(rng, truth, mask)
    both = mask & base_mask
    out[both] = base[both]
    return out


def scales(quick: bool) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(name, x_t, x_h) per holdout size."""
    out = []
    from sklearn.datasets import load_digits

    y = load_digits().target.astype(np.int64)
    perm = np.random.default_rng(0).permutation(len(y))  # the problem kit's split (seed 0)
    n_test = int(round(0.3 * len(y)))
    x_t = y[perm[:n_test]]
    for m_h in (180, 359):
        out.append((f"digits m={n_test} m_h={m_h}", x_t, y[perm[n_test:n_test + m_h]]))
    if FMNIST.exists():
        from del_embed.data import load_labels

        labels = load_labels(FMNIST).astype(np.int64)
        for m_h in (1000, 2000):
            out.append((f"fmnist m={len(labels) - m_h} m_h={m_h}", labels[m_h:], labels[:m_h]))
    else:
        print(f"# FashionMNIST labels not found at {FMNIST}: that scale is skipped")
    return out


def measure(name: str, x_t: np.ndarray, x_h: np.ndarray, rule: Rule, *, seeds: int, attack_seeds: int,
            e_a: float, gaps: list[float]) -> dict[str, object]:
    m, m_h = len(x_t), len(x_h)
    model = random_projection_del(m, C, n=256, seed=0)
    y_t = f_int(model, x_t)
    target = Target.from_integer(model)
    res: dict[str, object] = {"name": name}
    honest_fail = {g: 0 for g in gaps}
    honest_vested = {g: [0, 0] for g in gaps}  # vested, provisional
    cheat_pass = {"lookup": 0, "gamble 1": 0, "gamble 3": 0, "gamble 10": 0, "better": 0, "next season": 0}
    dev = []
    cheat_prov, cheat_vest, cheat_d, attack_s = [], [], [], []
    for seed in range(seeds):
        rng = np.random.default_rng(1000 + seed)
        a_z = apply_errors(rng, x_t, wrong_mask(rng, m, e_a))
        a_hm = wrong_mask(rng, m_h, e_a)
        a_h = apply_errors(rng, x_h, a_hm)
        d_a = distance_ppb(f_int(model, a_z), y_t)
        base = error_ppb(a_h, x_h)
        for g in gaps:
            _, b_zm = paired_masks(rng, m, e_a, e_a - g)
            a_hm2, b_hm = paired_masks(rng, m_h, e_a, e_a - g)
            # pair B with A on Z_h: B's mask is drawn jointly with a fresh A mask; use that A as the confirmed one
            a_h2 = apply_errors(rng, x_h, a_hm2)
            b_h = with_errors_like(rng, x_h, b_hm, a_h2, a_hm2)
            b_z = apply_errors(rng, x_t, b_zm)
            d_b = distance_ppb(f_int(model, b_z), y_t)
            e_b = error_ppb(b_h, x_h)
            dev.append(abs(d_b - e_b))
            ok = rule.vests(e_b, error_ppb(a_h2, x_h), d_b)
            honest_fail[g] += not ok
            r = improvement_reward(min(d_b, d_a - 1), d_a, REWARD_A, SCALE) if d_b < d_a else 0
            honest_vested[g][1] += r
            honest_vested[g][0] += r if ok else 0
        # the cheater's holdout labels: A's, possibly gambled
        cheat_d_ppb = 0
        if seed < attack_seeds:
            t0 = time.perf_counter()
            x_c = attack(target, y_t.astype(np.float64) if hasattr(y_t, "astype") else np.asarray(y_t, float), a_z,
                         max_seconds=60)
            attack_s.append(time.perf_counter() - t0)
            cheat_d_ppb = distance_ppb(f_int(model, x_c), y_t)
            cheat_d.append(cheat_d_ppb)
            prov = improvement_reward(cheat_d_ppb, d_a, REWARD_A, SCALE)
            cheat_prov.append(prov)
            cheat_vest.append(prov if rule.vests(error_ppb(a_h, x_h), base, cheat_d_ppb) else 0)
        cheat_pass["lookup"] += rule.vests(error_ppb(a_h, x_h), base, cheat_d_ppb)
        for k in (1, 3, 10):
            g_h = a_h.copy()
            pos = rng.choice(m_h, size=k, replace=False)
            g_h[pos] = rng.integers(0, C, k)
            cheat_pass[f"gamble {k}"] += rule.vests(error_ppb(g_h, x_h), base, cheat_d_ppb)
        # a truly better model on Z_h (by the largest gap), but an attacked d ~ 0 on Z
        a_hm3, b_hm3 = paired_masks(rng, m_h, e_a, e_a - max(gaps))
        a_h3 = apply_errors(rng, x_h, a_hm3)
        b_h3 = with_errors_like(rng, x_h, b_hm3, a_h3, a_hm3)
        cheat_pass["better"] += rule.vests(error_ppb(b_h3, x_h), error_ppb(a_h3, x_h), cheat_d_ppb)
        # season k >= 1: the baseline is A's error on the previous season's (independent) holdout set
        prev = error_ppb(apply_errors(rng, x_h, wrong_mask(rng, m_h, e_a)), x_h)
        cheat_pass["next season"] += rule.vests(error_ppb(a_h, x_h), prev, cheat_d_ppb)
    res.update(
        m=m, m_h=m_h, honest_frr={g: honest_fail[g] / seeds for g in gaps},
        honest_vested={g: (v / p if p else 1.0) for g, (v, p) in honest_vested.items()},
        cheat_pass={k: v / seeds for k, v in cheat_pass.items()},
        dev_p999=float(np.quantile(dev, 0.999)) / PPB, dev_max=max(dev) / PPB,
        cheat_prov=cheat_prov, cheat_vest=cheat_vest, cheat_d=cheat_d, attack_s=attack_s,
    )
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=400)
    ap.add_argument("--attack-seeds", type=int, default=3)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--error", type=float, default=0.15, help="the confirmed model's true error e_A")
    ap.add_argument("--margin-ppb", type=int, default=None, help="default: ProblemOptions.holdout_margin_ppb")
    ap.add_argument("--bound-ppb", type=int, default=None, help="default: ProblemOptions.consistency_ppb")
    args = ap.parse_args()
    from daimon_node.problem_kit import ProblemOptions

    opts = ProblemOptions()
    rule = Rule(args.margin_ppb if args.margin_ppb is not None else opts.holdout_margin_ppb,
                args.bound_ppb if args.bound_ppb is not None else opts.consistency_ppb)
    seeds = 60 if args.quick else args.seeds
    gaps = [g for g in (0.01, 0.02, 0.03, 0.05, 0.08, 0.10) if g < args.error * 0.9]
    print(f"# rule: margin {rule.margin_ppb / PPB:.3%}, consistency bound {rule.bound_ppb / PPB:.3%}; "
          f"e_A = {args.error:.0%}; {seeds} seeds; DEL: random projection n=256 (f_int)")
    rows = [measure(n, xt, xh, rule, seeds=seeds, attack_seeds=args.attack_seeds, e_a=args.error, gaps=gaps)
            for n, xt, xh in scales(args.quick)]
    print("\n## Honest model better by `gap`: false-rejection rate (vested fraction of its provisional reward)")
    print("| scale | " + " | ".join(f"gap {g:.0%}" for g in gaps) + " | |d−e_h| p99.9 | max |")
    print("|---|" + "---|" * (len(gaps) + 2))
    for r in rows:
        cells = [f"{r['honest_frr'][g]:.3f} ({r['honest_vested'][g]:.3f})" for g in gaps]  # type: ignore[index]
        print(f"| {r['name']} | " + " | ".join(cells) + f" | {r['dev_p999']:.3f} | {r['dev_max']:.3f} |")
    print("\n## Cheater (lookup table, attacked d on Z): pass rate of the holdout check")
    keys = ["lookup", "gamble 1", "gamble 3", "gamble 10", "better", "next season"]
    print("| scale | " + " | ".join(keys) + " | attacked d (ppb) | attack s | provisional reward | vested |")
    print("|---|" + "---|" * (len(keys) + 4))
    for r in rows:
        cp = r["cheat_pass"]  # type: ignore[assignment]
        prov = sum(r["cheat_prov"]) / max(1, len(r["cheat_prov"])) / SCALE  # type: ignore[arg-type]
        vest = sum(r["cheat_vest"]) / SCALE  # type: ignore[arg-type]
        print(f"| {r['name']} | " + " | ".join(f"{cp[k]:.3f}" for k in keys)  # type: ignore[index]
              + f" | {r['cheat_d']} | {np.mean(r['attack_s']):.1f} | {prov:.3f} | {vest:.3f} |")


if __name__ == "__main__":
    main()
