"""Train an x_t-specific DEL.

Example (library)::

    from del_embed.data import load_labels
    from del_embed.model import DELConfig
    from del_embed.train import train
    x_t = load_labels("t10k-labels-idx1-ubyte.gz")
    result = train(x_t, DELConfig(m=x_t.size, steps=3000))

or the CLI: ``daimon-node del train --labels FILE --out DIR --steps 3000``.

Recipe (docs/del.md says why): one-hot input as an embedding bag evaluated
incrementally from ``f(x_t)``; batches mix the paper's uniform v with samples
whose error is uniform in [0, 25%]; L1 loss with extra weight on the 5-20%
band; Adam with warm-up and cosine decay.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from .data import Changes, changes_from_draws, sample_v
from .model import DEL, DELConfig, DeltaBatch

TEST_SEED_OFFSET = 1_000_003  # the held-out loss batch never shares a stream with training
TEST_BATCH = 512
EVAL_EVERY = 50


@dataclass
class TrainResult:
    model: DEL
    config: DELConfig
    steps_done: int
    wall_seconds: float
    cpu_seconds: float = 0.0  # process CPU time: on a shared machine wall time overstates the work
    train_loss: list[tuple[int, float]] = field(default_factory=list)  # (step, mean loss since last log)
    test_loss: list[tuple[int, float]] = field(default_factory=list)  # (step, held-out L1 loss)


def get_lr(step: int, cfg: DELConfig, elapsed: float = 0.0) -> float:
    """Linear warm-up, then cosine decay to ``lr * lr_min_frac``.

    With a wall-time budget (``max_seconds``) progress is the larger of the step
    and the time fraction, so a run cut short by its budget still ends annealed.
    """
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    t = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps))
    if cfg.max_seconds > 0:
        t = max(t, min(1.0, elapsed / cfg.max_seconds))
    lo = cfg.lr * cfg.lr_min_frac
    return lo + 0.5 * (cfg.lr - lo) * (1.0 + math.cos(math.pi * t))


def get_batch(x_t: np.ndarray, cfg: DELConfig, rng: np.random.Generator) -> tuple[DeltaBatch, torch.Tensor]:
    vs = sample_v(rng, cfg.batch_size, cfg.m, cfg.num_classes, cfg.low_error_frac, cfg.low_error_max)
    ch = changes_from_draws(x_t, cfg.num_classes, rng, vs)
    return DeltaBatch.build(x_t, ch, cfg), torch.from_numpy(ch.errors.astype(np.float32))


def held_out_batch(x_t: np.ndarray, cfg: DELConfig) -> tuple[DeltaBatch, torch.Tensor]:
    """A fixed batch from the paper's GENERATEDATA (v uniform) for the test-loss curve."""
    rng = np.random.default_rng(cfg.seed + TEST_SEED_OFFSET)
    vs = rng.integers(1, cfg.m + 1, size=TEST_BATCH)
    ch: Changes = changes_from_draws(x_t, cfg.num_classes, rng, vs)
    return DeltaBatch.build(x_t, ch, cfg), torch.from_numpy(ch.errors.astype(np.float32))


@torch.no_grad()
def estimate_loss(model: DEL, batch: DeltaBatch, targets: torch.Tensor) -> float:
    d, _ = model(batch)
    return float((d - targets).abs().mean())


def train(
    x_t: np.ndarray,
    cfg: DELConfig,
    on_step: Callable[[int, float], None] | None = None,
) -> TrainResult:
    """Train a DEL on GENERATEDATA(x_t); ``on_step(step, loss)`` drives a progress bar."""
    x_t = np.asarray(x_t, dtype=np.int64)
    assert x_t.shape == (cfg.m,), f"x_t has shape {x_t.shape}, config says m={cfg.m}"
    torch.set_num_threads(max(1, cfg.threads))
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    model = DEL(cfg)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, fused=True)
    test_batch, test_targets = held_out_batch(x_t, cfg)
    result = TrainResult(model=model, config=cfg, steps_done=0, wall_seconds=0.0)
    result.test_loss.append((0, estimate_loss(model, test_batch, test_targets)))
    start = time.perf_counter()
    cpu_start = time.process_time()
    running, count = 0.0, 0
    for step in range(cfg.steps):
        for group in opt.param_groups:
            group["lr"] = get_lr(step, cfg, time.perf_counter() - start)
        batch, targets = get_batch(x_t, cfg, rng)
        _, loss = model(batch, targets)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        running += float(loss.detach())
        count += 1
        result.steps_done = step + 1
        if on_step is not None:
            on_step(step + 1, float(loss.detach()))
        last = step + 1 == cfg.steps
        out_of_time = cfg.max_seconds > 0 and time.perf_counter() - start > cfg.max_seconds
        if (step + 1) % EVAL_EVERY == 0 or last or out_of_time:
            result.train_loss.append((step + 1, running / count))
            result.test_loss.append((step + 1, estimate_loss(model, test_batch, test_targets)))
            running, count = 0.0, 0
        if out_of_time:
            break
    result.wall_seconds = time.perf_counter() - start
    result.cpu_seconds = time.process_time() - cpu_start
    model.eval()
    return result


def train_artifact(x_t: np.ndarray, cfg: DELConfig, on_step: Callable[[int, float], None] | None = None):
    """Train, quantise to the consensus ``IntegerDEL`` and bundle both as an ``Artifact``."""
    from .artifact import build_artifact
    from .model import float_weights

    res = train(x_t, cfg, on_step=on_step)
    history = {
        "train_loss": res.train_loss,
        "test_loss": res.test_loss,
        "steps_done": res.steps_done,
        "wall_seconds": res.wall_seconds,
        "cpu_seconds": res.cpu_seconds,
    }
    return build_artifact(float_weights(res.model), cfg.to_dict(), history), res
