"""A cheating improver, for tests and the demo (issue 9): it fools the DEL, not the holdout.

With f and y_t public, a cheater needs no better model to claim a tiny DEL
distance: it takes the public best model's predictions on Z, runs the strongest
white-box attack of ``del_embed.attack`` (greedy coordinate search on the exact
first layer of f_int) to drive d(f(x), y_t) towards 0, and submits a lookup
table (``lookup_onnx``) mapping every public input of Z to its attacked label.
It does not know x_h, so on Z_h (and anything else) it answers what the public
best model answers. The DEL pays it provisionally; the sealed holdout burns it:
its holdout predictions equal the confirmed model's, so they cannot beat them
by the margin, and its claimed d ~ 0 is inconsistent with its holdout error.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import trio

from chain.consensus import period_of
from chain.state import get_meta, get_problem
from del_embed.attack import Target, attack
from del_embed.integer import distance_ppb, f_int

from daimon_node.config import NodeConfig
from daimon_node.daemon.chains import ChainHandle
from daimon_node.daemon.components import Component, ComponentSpec, RoleComponent
from daimon_node.daemon.context import RoleContext
from daimon_node.daemon.roles import ImproverRole, fetch_problem_view
from daimon_node.harness.lookup_onnx import lookup_model
from daimon_node.proofs.poi import predict, run_scores, tie_margin
from daimon_node.proofs.problem_kit import Problem
from daimon_node.proofs.sandbox import Sandbox

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CheatModel:
    onnx_bytes: bytes
    start_d_ppb: list[int]  # the base model's distance per tuple
    end_d_ppb: list[int]  # the attacked labels' distance per tuple
    z_labels: list[np.ndarray]  # attacked labels on each tuple's Z


def model_labels(model: bytes, problem: Problem, sandbox: Sandbox) -> list[np.ndarray]:
    """The model's argmax labels on every input set (tuples' Z, then Z_h), ties not masked."""
    tau = tie_margin(problem)
    return [predict(s, tau)[0] for s in run_scores(model, problem, sandbox)]


def attack_labels(problem: Problem, start: list[np.ndarray], *, max_seconds: float = 30.0) -> list[np.ndarray]:
    """Greedy white-box attack on each tuple's f_int, from ``start`` (one label vector per tuple)."""
    out = []
    for tup, model, x in zip(problem.tuples, problem.dels, start):
        out.append(attack(Target.from_integer(model), np.asarray(tup.y_t, dtype=np.float64), np.asarray(x),
                          max_seconds=max_seconds))
    return out


def build_cheat_model(problem: Problem, base_model: bytes | None, sandbox: Sandbox, *,
                      max_seconds: float = 30.0, seed: int = 0) -> CheatModel:
    """Attack the base model's (or, without one, uniform random) labels; table them with Z_h's."""
    n_sets = len(problem.inputs())
    if base_model is not None:
        base = model_labels(base_model, problem, sandbox)
    else:
        rng = np.random.default_rng(seed)
        base = [rng.integers(0, problem.params.num_classes, len(arr)) for _, arr in problem.inputs()]
    assert len(base) == n_sets
    z_start = base[: len(problem.tuples)]
    attacked = attack_labels(problem, z_start, max_seconds=max_seconds)
    rows = list(problem.z) + ([problem.z_h] if problem.z_h is not None else [])
    labels = attacked + base[len(problem.tuples):]
    table = np.concatenate([np.asarray(r) for r in rows])
    onnx_bytes = lookup_model(table, np.concatenate(labels), problem.params.num_classes,
                              input_dtype=problem.params.input_spec.dtype)
    start_d = [distance_ppb(f_int(m, x), t.y_t) for m, x, t in zip(problem.dels, z_start, problem.tuples)]
    end_d = [distance_ppb(f_int(m, x), t.y_t) for m, x, t in zip(problem.dels, attacked, problem.tuples)]
    return CheatModel(onnx_bytes, start_d, end_d, attacked)


@dataclass
class CheaterRole:
    """Builds a lookup-table model from the public best one, then competes like an improver.

    ``improver`` is an ``ImproverRole`` whose model list this role extends: each
    time the provisional best model changes (and is not ours), up to ``rounds``
    times, it attacks that model's labels and appends the new table to the list.
    """

    improver: ImproverRole
    out_dir: Path
    rounds: int = 1
    max_seconds: float = 30.0
    wait_for_best: bool = True  # False: cheat from random labels when there is no best model yet
    after_period: int = 0  # do not cheat before this competition period
    built: list[str] = field(default_factory=list)  # base digests (hex) already attacked
    status: str = "waiting for a public best model"

    async def step(self, ctx: RoleContext, handle: ChainHandle) -> None:
        if not handle.started:
            return
        imp = self.improver
        period = period_of(get_problem(handle.state).params, int(ctx.now()))
        if (len(self.built) < self.rounds and imp.index >= len(imp.models)
                and period >= self.after_period):
            meta = get_meta(handle.state)
            best = meta.provisional
            own = best is not None and best.owner == ctx.keys.address_bytes
            if best is None and self.wait_for_best:
                return
            key = best.digest.hex() if best is not None else "random"
            if not own and key not in self.built and (meta.season is None or meta.season.holdout is not None):
                self.built.append(key)
                base = None
                if best is not None:
                    params = get_problem(handle.state).params
                    base = await ctx.fetch_content(best.digest, params.max_model_bytes)
                problem = await fetch_problem_view(ctx, handle)
                cheat = await trio.to_thread.run_sync(
                    lambda: build_cheat_model(problem, base, ctx.sandbox, max_seconds=self.max_seconds))
                self.out_dir.mkdir(parents=True, exist_ok=True)
                path = self.out_dir / f"cheat-{len(self.built)}.onnx"
                path.write_bytes(cheat.onnx_bytes)
                imp.models.append(path)
                self.status = f"attacked {key[:12]}: d {cheat.start_d_ppb} -> {cheat.end_d_ppb} ppb"
                log.info("cheater: %s", self.status)
        await imp.step(ctx, handle)


def cheater_component(config: NodeConfig, ctx: RoleContext) -> Component:
    """A cheater competing through its own improver (its models are the tables it builds)."""
    section = config.roles.cheater
    role = CheaterRole(ImproverRole([]), ctx.data_dir / "cheater", rounds=section.rounds,
                       max_seconds=section.max_seconds, wait_for_best=section.wait_for_best,
                       after_period=section.after_period)
    return RoleComponent("cheater", role, section.chain)


# Named in a node's config to run it: node.components = ["daimon_node.harness.cheater:COMPONENT"].
COMPONENT = ComponentSpec("cheater", lambda config: config.roles.cheater.enabled, cheater_component)
COMPONENT_PATH = f"{__name__}:COMPONENT"


def enable(cfg: dict[str, Any], **settings: Any) -> None:
    """Turn the cheater on in a node's config (a TOML table): its settings and its component."""
    cfg.setdefault("roles", {})["cheater"] = {"enabled": True, **settings}
    components = cfg.setdefault("node", {}).setdefault("components", [])
    if COMPONENT_PATH not in components:
        components.append(COMPONENT_PATH)

__all__ = ["COMPONENT", "COMPONENT_PATH", "enable", "CheatModel", "CheaterRole", "attack_labels", "build_cheat_model",
           "model_labels"]
