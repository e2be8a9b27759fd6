"""Tables shared by ``benchmarks/del_bench.py`` and ``daimon-node del attack``.

The attack table runs each attack against the DEL (scored on ``f_int``) and
against the random-projection baseline, from a "nearby" start (a stand-in for
the public best model's predictions) and from a random start.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np

from .attack import (
    AttackRow,
    Target,
    attack,
    inspection_attack,
    inverse_attack,
    nearby_start,
    random_start,
    relaxed_attack,
    run_attack_row,
    score_del,
)
from .baseline import RandomProjection, cosine_distance
from .integer import IntegerDEL, f_int


def attack_table(
    model: IntegerDEL,
    x_t: np.ndarray,
    *,
    seconds: float = 60.0,
    nearby_error: float = 0.15,
    seed: int = 0,
    methods: Iterable[str] = ("greedy",),
    inverse_epochs: int = 5,
    baseline_seed: int = 0,
) -> list[AttackRow]:
    m, c = model.m, model.num_classes
    y_t = f_int(model, x_t)
    base = RandomProjection(m, c, model.n, seed=baseline_seed)
    by_t = base.embed(x_t)
    embeddings = {
        "DEL": (Target.from_integer(model), y_t, lambda x: score_del(model, y_t, x)),
        "baseline": (Target.from_baseline(base), by_t, lambda x: cosine_distance(base.embed(x), by_t)),
    }
    starts = {
        f"nearby({nearby_error:.0%})": nearby_start(x_t, c, nearby_error, seed),
        "random": random_start(m, c, seed + 1),
    }
    rows = []
    for method in methods:
        for name, (target, y, dist) in embeddings.items():
            for start_name, start in starts.items():
                if method == "inspect" and start_name != "random":
                    continue  # uses no start: one row per embedding (start columns: a random vector)
                fn = _method(method, target, y, x_t, start_name, seconds, seed, inverse_epochs)
                rows.append(run_attack_row(name, method, start_name, dist, fn, start, x_t))
    return rows


def _method(method: str, target: Target, y, x_t, start_name: str, seconds: float, seed: int, epochs: int):
    if method == "greedy":
        return lambda s: attack(target, y, s, max_seconds=seconds)
    if method == "relaxed":
        return lambda s: relaxed_attack(target, y, None if start_name == "random" else s, max_seconds=seconds,
                                        seed=seed)
    if method == "inverse":
        return lambda s: inverse_attack(target, y, x_t, None if start_name == "random" else s, epochs=epochs,
                                        seed=seed)[1]
    if method == "inspect":
        return lambda s: inspection_attack(target)
    raise ValueError(f"unknown attack method {method!r}")


def format_attack_table(rows: list[AttackRow]) -> str:
    head = f"{'embedding':9} {'method':8} {'start':13} {'start e':>8} {'start d':>9} {'end d':>10} {'end e':>7} {'recov.':>7} {'time s':>7}"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r.embedding:9} {r.method:8} {r.start:13} {r.start_error:8.4f} {r.start_d:9.6f} {r.end_d:10.7f} "
            f"{r.end_error:7.4f} {r.recovered:7.4f} {r.seconds:7.1f}"
        )
    return "\n".join(lines)


def format_fidelity_table(report: dict) -> str:
    head = f"{'band':7} {'embedding':9} {'MAE':>8} {'pearson':>8} {'rank@0.5pp':>11} {'bias':>9}"
    lines = [head, "-" * len(head)]
    for band, per in report["bands"].items():
        for name, label in (("del", "DEL f_int"), ("baseline", "baseline")):
            mt = per[name]
            lines.append(f"{band:7} {label:9} {mt['mae']:8.5f} {mt['pearson']:8.4f} {mt['ranking_accuracy']:11.3f} {mt['bias']:+9.5f}")
    return "\n".join(lines)
