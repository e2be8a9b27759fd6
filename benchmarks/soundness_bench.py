"""Soundness of the sealed holdout (issue 9): who vests under the chain's own rule, measured.

Every verdict below comes from ``chain.season.holdout_verdict``, the function
``judge_season`` runs, with the problem kit's defaults (margin, z) and the
consistency allowance ``problem create`` measures on the DEL it builds (an
untrained random projection, n = 256, exact ``f_int``). Per scale and holdout
size m_h, over many seeds:

- A (the confirmed model) has true error e_A on Z and Z_h. An honest B is better
  by ``gap``: it fixes some of A's errors and makes a few new ones (30% of B's
  errors are on items A got right), so the two are *paired* on the same Z_h, as
  the chain compares them (A's labels on Z_h ride in B's PoI).
- Cheaters (they do not know x_h):
  ``lookup``: A's labels on Z attacked with ``del_embed.attack`` to d ~ 0, A's
  answers on Z_h (in season 0 and in any later season alike: the comparison is
  always on the current Z_h); ``gamble k``: also changes k random holdout
  answers; ``equal``: a different model exactly as good as A (independent
  errors at the same rate) that tunes its labels on Z to claim the smallest d
  the consistency test would likely allow; ``better g, d~0``: a model truly
  better than A by g on Z_h that claims the attacked d ~ 0 on Z.

Prints the honest improver's vest rate and vested fraction of its provisional
reward by gap, the smallest gap it reliably passes at (``2 z sqrt(b + c) / n``),
and each cheater's pass rate, provisional and vested reward.
``--quick`` runs fewer seeds.

Scales: digits (m = 539 test labels of the kit's split, m_h of 180 or 359
holdout labels, the real digits labels) and FashionMNIST (the 10,000 test
labels of FashionMNIST, from $FMNIST_LABELS or ``del_embed.data.fashion_mnist_test_labels``: x_h
the first m_h, x_t the rest); FashionMNIST is skipped with a note when the file is absent.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from chain.devnet import Devnet, DevnetConfig  # noqa: E402
from chain.labels import array_to_labels  # noqa: E402
from chain.rewards import improvement_reward  # noqa: E402
from chain.season import holdout_verdict, season_mint_bound  # noqa: E402
from chain.types import ProblemParams  # noqa: E402
from daimon_node.proofs.problem_del import calibrate_consistency  # noqa: E402
from daimon_node.proofs.problem_params import ProblemOptions, detectable_margin
from del_embed.attack import Target, attack  # noqa: E402
from del_embed.data import fashion_mnist_test_labels  # noqa: E402
from del_embed.integer import PPB, distance_ppb, f_int, random_projection_del  # noqa: E402

FMNIST = Path(os.environ.get("FMNIST_LABELS", str(fashion_mnist_test_labels())))
C = 10
NEW_SHARE = 0.3  # share of B's errors on items A got right
REWARD_A, SCALE = 3, 10**18
CHEATERS = ("lookup", "gamble 1", "gamble 10", "equal", "better 3%, d~0", "better 10%, d~0")


def wrong_mask(rng: np.random.Generator, n: int, e: float) -> np.ndarray:
    return rng.random(n) < e


def paired_masks(rng: np.random.Generator, n: int, e_a: float, e_b: float) -> tuple[np.ndarray, np.ndarray]:
    """Errors of A (rate e_a) and of a better B (rate e_b), B's errors mostly a subset of A's."""
    a = wrong_mask(rng, n, e_a)
    q = NEW_SHARE * e_b / (1 - e_a)  # P(B wrong | A right)
    p = (e_b - q * (1 - e_a)) / e_a  # P(B wrong | A wrong)
    u = rng.random(n)
    return a, np.where(a, u < p, u < q)


def apply_errors(rng: np.random.Generator, truth: np.ndarray, mask: np.ndarray) -> np.ndarray:
    out = truth.copy()
    out[mask] = (truth[mask] + rng.integers(1, C, int(mask.sum()))) % C
    return out


def paired_labels(rng: np.random.Generator, truth: np.ndarray, e_a: float, e_b: float) -> tuple[np.ndarray, np.ndarray]:
    """A's and B's labels; where both are wrong, B repeats A's wrong label."""
    a_mask, b_mask = paired_masks(rng, len(truth), e_a, e_b)
    a = apply_errors(rng, truth, a_mask)
    b = apply_errors(rng, truth, b_mask)
    both = a_mask & b_mask
    b[both] = a[both]
    return a, b


def scales() -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(name, x_t, x_h) per holdout size."""
    from sklearn.datasets import load_digits

    out = []
    y = load_digits().target.astype(np.int64)
    perm = np.random.default_rng(0).permutation(len(y))  # the problem kit's split (seed 0)
    n_test = int(round(0.3 * len(y)))
    x_t = y[perm[:n_test]]
    for m_h in (180, 359):
        out.append((f"digits m={n_test} m_h={m_h}", x_t, y[perm[n_test:n_test + m_h]]))
    if FMNIST.exists():
        from del_embed.data import load_labels

        labels = load_labels(FMNIST).astype(np.int64)
        for m_h in (1000, 2000, 5000):
            out.append((f"fmnist m={len(labels) - m_h} m_h={m_h}", labels[m_h:], labels[:m_h]))
    else:
        print(f"# FashionMNIST labels not found at {FMNIST}: that scale is skipped")
    return out


def measure(name: str, x_t: np.ndarray, x_h: np.ndarray, base: ProblemParams, *, seeds: int, attack_runs: int,
            e_a: float, gaps: list[float], margin_ppb: int | None) -> dict[str, object]:
    m, m_h = len(x_t), len(x_h)
    model = random_projection_del(m, C, n=256, seed=0)
    r_ppb = calibrate_consistency(model, x_t, C)
    margin = margin_ppb if margin_ppb is not None else detectable_margin(m_h, base.holdout_z_centi)
    params = dataclasses.replace(base, consistency_ppb=r_ppb, holdout_margin_ppb=margin)
    gaps = sorted(set(gaps) | {margin / PPB})
    y_t = f_int(model, x_t)
    truth_h = array_to_labels(x_h)

    def verdict(labels: np.ndarray, ref: np.ndarray, d: int):  # type: ignore[no-untyped-def]
        return holdout_verdict(params, truth_h, array_to_labels(labels), (), (array_to_labels(ref), ()), d, m)

    def dist(labels: np.ndarray) -> int:
        return distance_ppb(f_int(model, labels), y_t)

    vested = {g: 0 for g in gaps}
    reward = {g: [0, 0] for g in gaps}  # vested, provisional
    discord = {g: [] for g in gaps}  # type: dict[float, list[int]]
    passes = {k: 0 for k in CHEATERS}
    cheat_prov, cheat_vest, cheat_d, attack_s = [], [], [], []
    attacked: list[int] = []
    for seed in range(seeds):
        rng = np.random.default_rng(1000 + seed)
        a_z = apply_errors(rng, x_t, wrong_mask(rng, m, e_a))
        d_a = dist(a_z)
        for g in gaps:
            _, b_z = paired_labels(rng, x_t, e_a, e_a - g)
            a_h, b_h = paired_labels(rng, x_h, e_a, e_a - g)
            d_b = dist(b_z)
            v = verdict(b_h, a_h, d_b)
            vested[g] += v.vests
            discord[g].append(v.gained + v.lost)
            prov = improvement_reward(d_b, d_a, REWARD_A, SCALE) if d_b < d_a else 0
            reward[g][1] += prov
            reward[g][0] += prov if v.vests else 0
        a_h = apply_errors(rng, x_h, wrong_mask(rng, m_h, e_a))
        # the lookup cheater: attacked d on Z (run a few times; its d is always ~0), A's answers on Z_h
        if len(attacked) < attack_runs:
            t0 = time.perf_counter()
            x_c = attack(Target.from_integer(model), np.asarray(y_t, dtype=np.float64), a_z, max_seconds=60)
            attack_s.append(time.perf_counter() - t0)
            attacked.append(dist(x_c))
        d_cheat = attacked[seed % len(attacked)]
        v = verdict(a_h, a_h, d_cheat)
        passes["lookup"] += v.vests
        prov = improvement_reward(d_cheat, d_a, REWARD_A, SCALE)
        cheat_d.append(d_cheat)
        cheat_prov.append(prov)
        cheat_vest.append(prov if v.vests else 0)
        for k in (1, 10):
            g_h = a_h.copy()
            pos = rng.choice(m_h, size=k, replace=False)
            g_h[pos] = rng.integers(0, C, k)
            passes[f"gamble {k}"] += verdict(g_h, a_h, d_cheat).vests
        # as good as A, independent errors, claiming the lowest d that consistency would likely let through
        e_claim = e_a * (1 - 0.9 * r_ppb / PPB)
        passes["equal"] += verdict(apply_errors(rng, x_h, wrong_mask(rng, m_h, e_a)), a_h, int(e_claim * PPB)).vests
        # truly better on Z_h, but claiming the attacked d ~ 0
        for g in (0.03, 0.10):
            a_h3, b_h3 = paired_labels(rng, x_h, e_a, e_a - g)
            passes[f"better {g:.0%}, d~0"] += verdict(b_h3, a_h3, d_cheat).vests
    z = params.holdout_z_centi / 100
    return dict(
        name=name, m=m, m_h=m_h, r=r_ppb / PPB, margin=margin / PPB,
        gaps=gaps, vest_rate={g: vested[g] / seeds for g in gaps},
        vest_frac={g: (v / p if p else 1.0) for g, (v, p) in reward.items()},
        detectable={g: 2 * z * float(np.sqrt(np.mean(discord[g]))) / m_h for g in gaps},
        passes={k: v / seeds for k, v in passes.items()},
        cheat_prov=float(np.mean(cheat_prov)) / SCALE, cheat_vest=float(np.sum(cheat_vest)) / SCALE,
        cheat_d=sorted(set(cheat_d)), attack_s=float(np.mean(attack_s)),
    )


def measure_trust(name: str, x_t: np.ndarray, x_h: np.ndarray, base: ProblemParams, *, seeds: int,
                  e_a: float) -> dict[str, object]:
    """The honest improver's worst case under a lying contributor (issue 14, finding 6).

    The contributor knows x_h and seals what it likes; nothing on chain can check
    hidden labels. An honest B, better than A by the margin, is judged against
    (1) the true x_h, (2) x_h := A's own answers on Z_h (B can then never gain on
    A: b = 0), (3) uniform random labels. B loses its provisional reward and its
    held improver bond whenever it burns. The contributor's own lookup model
    answers Z_h with the labels it sealed and claims an attacked d = 0.5% on Z (the DEL attack
    reaches about that), so it is consistent with its e_h = 0.
    """
    m, m_h = len(x_t), len(x_h)
    model = random_projection_del(m, C, n=256, seed=0)
    margin = detectable_margin(m_h, base.holdout_z_centi)
    params = dataclasses.replace(base, consistency_ppb=calibrate_consistency(model, x_t, C), holdout_margin_ppb=margin)
    y_t = f_int(model, x_t)
    opts = ProblemOptions()
    vests = {"true": 0, "A's answers": 0, "random": 0}
    loss: list[int] = []
    own_lookup = 0
    for seed in range(seeds):
        rng = np.random.default_rng(5000 + seed)
        a_z, b_z = paired_labels(rng, x_t, e_a, e_a - margin / PPB)
        a_h, b_h = paired_labels(rng, x_h, e_a, e_a - margin / PPB)
        d_a, d_b = (distance_ppb(f_int(model, z), y_t) for z in (a_z, b_z))
        sealed = {"true": x_h, "A's answers": a_h, "random": rng.integers(0, C, m_h)}
        prov = improvement_reward(d_b, d_a, REWARD_A, SCALE) if d_b < d_a else 0
        for key, truth in sealed.items():
            v = holdout_verdict(params, array_to_labels(truth), array_to_labels(b_h), (), (array_to_labels(a_h), ()),
                                d_b, m)
            vests[key] += v.vests
            if key == "A's answers":
                loss.append(0 if v.vests else prov + opts.improver_bond)
        lookup = holdout_verdict(params, array_to_labels(sealed["random"]), array_to_labels(sealed["random"]), (),
                                 (array_to_labels(a_h), ()), PPB // 200, m)
        own_lookup += lookup.vests
    return dict(name=name, margin=margin / PPB, vests={k: v / seeds for k, v in vests.items()},
                loss=max(loss) / SCALE, own_lookup=own_lookup / seeds,
                bond=season_mint_bound(REWARD_A, SCALE) / SCALE)


def print_trust(rows: list[dict[str, object]]) -> None:
    print("\n## A lying contributor (it knows x_h): the honest improver's worst case")
    print("Honest B better than A by the margin. Vest rate when the contributor seals the true x_h, A's own answers"
          " on Z_h, or random labels; B's largest loss per improvement (provisional reward + held improver bond);"
          " how often the contributor's own lookup model vests (it answers Z_h with what it sealed);"
          " the contributor's minimum bond (what a season can mint).")
    print("| scale | margin | vest: true x_h | vest: x_h = A's answers | vest: random x_h | honest loss (tokens) "
          "| contributor's lookup vests | contributor bond (tokens) |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        v = r["vests"]  # type: ignore[assignment]
        true, copied, rand = v["true"], v["A's answers"], v["random"]  # type: ignore[index]
        print(f"| {r['name']} | {r['margin']:.1%} | {true:.3f} | {copied:.3f} | {rand:.3f} "
              f"| {r['loss']:.3f} | {r['own_lookup']:.3f} | {r['bond']:.1f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=400)
    ap.add_argument("--attack-runs", type=int, default=2)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--trust-only", action="store_true", help="only the lying-contributor table (seconds)")
    ap.add_argument("--error", type=float, default=0.15, help="the confirmed model's true error e_A")
    ap.add_argument("--margin-ppb", type=int, default=None, help="default: detectable_margin(m_h), as problem create")
    ap.add_argument("--z-centi", type=int, default=None, help="default: ProblemOptions.holdout_z_centi")
    args = ap.parse_args()
    opts = ProblemOptions()
    base = dataclasses.replace(Devnet(DevnetConfig(holdout_m=10)).params,
                               holdout_z_centi=args.z_centi if args.z_centi is not None else opts.holdout_z_centi)
    seeds = 60 if args.quick else args.seeds
    gaps = [g for g in (0.01, 0.02, 0.03, 0.05, 0.08, 0.10) if g < args.error * 0.9]
    margin_note = "detectable_margin(m_h)" if args.margin_ppb is None else f"{args.margin_ppb / PPB:.2%}"
    print(f"# rule: chain.season.holdout_verdict; margin {margin_note}, "
          f"z = {base.holdout_z_centi / 100:.2f}; consistency measured per DEL (calibrate_consistency); "
          f"e_A = {args.error:.0%}; {seeds} seeds; DEL: random projection n=256 (f_int)")
    t0 = time.perf_counter()
    trust = [measure_trust(n, xt, xh, base, seeds=seeds, e_a=args.error) for n, xt, xh in scales()]
    if args.trust_only:
        print_trust(trust)
        print(f"\n# {time.perf_counter() - t0:.0f} s")
        return
    rows = [measure(n, xt, xh, base, seeds=seeds, attack_runs=args.attack_runs, e_a=args.error, gaps=gaps,
                    margin_ppb=args.margin_ppb) for n, xt, xh in scales()]
    print("\n## Honest model better by `gap` (paired with A on Z_h): vest rate (vested share of its provisional reward)")
    print("Target: >= 0.99 at every gap >= the margin.")
    print("| scale | margin | consistency r | vest rate by gap (vested share) | at gap = margin | "
          "2 z sqrt(b+c)/m_h at gap 3% | met |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        margin = r["margin"]
        cells = ", ".join(f"{g:.1%}: {r['vest_rate'][g]:.3f} ({r['vest_frac'][g]:.3f})"  # type: ignore[index]
                          for g in r["gaps"])  # type: ignore[attr-defined]
        at = r["vest_rate"][margin]  # type: ignore[index]
        above = [r["vest_rate"][g] for g in r["gaps"] if g >= margin]  # type: ignore[attr-defined,index]
        det = r["detectable"].get(0.03, float("nan"))  # type: ignore[attr-defined]
        met = "yes" if min(above) >= 0.99 else "NO"
        print(f"| {r['name']} | {margin:.1%} | {r['r']:.2f} | {cells} | {at:.3f} | {det:.1%} | {met} |")
    print("\n## Cheaters: pass rate of the holdout check (target: the lookup cheater vests 0)")
    print("| scale | " + " | ".join(CHEATERS) + " | attacked d (ppb) | attack s | lookup provisional reward | vested |")
    print("|---|" + "---|" * (len(CHEATERS) + 4))
    for r in rows:
        p = r["passes"]  # type: ignore[assignment]
        print(f"| {r['name']} | " + " | ".join(f"{p[k]:.3f}" for k in CHEATERS)  # type: ignore[index]
              + f" | {r['cheat_d']} | {r['attack_s']:.1f} | {r['cheat_prov']:.3f} | {r['cheat_vest']:.3f} |")
    print_trust(trust)
    print(f"\n# {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
