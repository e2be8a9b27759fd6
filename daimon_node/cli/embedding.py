"""``daimon-node del``: train, evaluate, plot and attack a Distance Embedding for Labels.

torch is imported only inside the commands that train or attack, so attaching
this group to the main CLI costs nothing for ``daimon-node start``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import typer

from daimon_node.errors import DaimonError

app = typer.Typer(help="Train, evaluate, plot and attack a DEL (Distance Embedding for Labels).", no_args_is_help=True)


class DELCommandError(DaimonError):
    """A DEL command got a bad label file, artifact or option."""


def _labels(path: Path) -> np.ndarray:
    from del_embed.data import load_labels
    from del_embed.errors import DELError

    try:
        return load_labels(path)
    except DELError as err:
        raise DELCommandError(str(err)) from err


def _artifact(path: Path):
    from del_embed.artifact import load_artifact
    from del_embed.errors import DELError

    try:
        return load_artifact(path)
    except DELError as err:
        raise DELCommandError(str(err)) from err


def _labels_for(art, path: Path) -> np.ndarray:
    x_t = _labels(path)
    if x_t.shape[0] != art.integer.m:
        raise DELCommandError(f"{path} holds {x_t.shape[0]} labels but the DEL was trained for m={art.integer.m}")
    if int(x_t.max()) >= art.integer.num_classes:
        raise DELCommandError(f"{path} holds labels >= the DEL's {art.integer.num_classes} classes")
    return x_t


class _Progress:
    """A rich progress bar fed by ``train``'s ``on_step`` callback."""

    def __init__(self, total: int, description: str) -> None:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self.bar = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
            TextColumn("loss {task.fields[loss]:.5f}"), TimeElapsedColumn(), TimeRemainingColumn(), transient=False,
        )
        self.task = self.bar.add_task(description, total=total, loss=float("nan"))

    def __enter__(self) -> Callable[[int, float], None]:
        self.bar.__enter__()
        return lambda step, loss: self.bar.update(self.task, completed=step, loss=loss)

    def __exit__(self, *exc: object) -> None:
        self.bar.__exit__(*exc)


@app.command("train")
def train_cmd(
    labels: Path = typer.Option(..., "--labels", help="Hidden test labels x_t: .npy of ints or IDX (.gz ok)."),
    out: Path = typer.Option(..., "--out", help="Directory for del.safetensors."),
    steps: int = typer.Option(3000, "--steps", min=1, help="Adam steps."),
    seed: int = typer.Option(0, "--seed", help="Seed of weights and training data."),
    hidden: int = typer.Option(256, "--hidden", min=1, help="First-layer width."),
    n: int = typer.Option(256, "--n", min=2, help="Embedding size."),
    batch_size: int = typer.Option(256, "--batch-size", min=1),
    lr: float = typer.Option(2e-3, "--lr", min=0.0),
    encoding: str = typer.Option("onehot", "--encoding", help="onehot (ours) or value (the paper's)."),
    threads: int = typer.Option(2, "--threads", min=1, help="torch.set_num_threads."),
    max_seconds: float = typer.Option(0.0, "--max-seconds", min=0.0, help="Stop early after this wall time (0: none)."),
    weight_bits: int = typer.Option(15, "--weight-bits", min=2, max=15, help="Quantised weight width."),
) -> None:
    """Train an x_t-specific DEL and write its artifact (integer + float weights, JSON config)."""
    from del_embed.artifact import save_artifact
    from del_embed.data import num_classes_of
    from del_embed.model import DELConfig
    from del_embed.train import train_artifact

    if encoding not in ("onehot", "value"):
        raise DELCommandError(f"--encoding must be onehot or value, not {encoding!r}")
    x_t = _labels(labels)
    cfg = DELConfig(
        m=int(x_t.shape[0]), num_classes=num_classes_of(x_t), hidden=hidden, n=n, encoding=encoding, seed=seed,
        steps=steps, batch_size=batch_size, lr=lr, threads=threads, max_seconds=max_seconds, weight_bits=weight_bits,
    )
    with _Progress(steps, "training DEL") as on_step:
        art, res = train_artifact(x_t, cfg, on_step=on_step)
    path = save_artifact(art, out)
    typer.echo(json.dumps({
        "artifact": str(path), "steps": res.steps_done, "wall_seconds": round(res.wall_seconds, 2),
        "final_test_loss": res.test_loss[-1][1], "m": cfg.m, "num_classes": cfg.num_classes,
        "hidden": cfg.hidden, "n": cfg.n, "shift1": art.integer.shift1,
    }))


@app.command("eval")
def eval_cmd(
    model_dir: Path = typer.Argument(..., help="Directory (or file) of a DEL artifact."),
    labels: Path = typer.Option(..., "--labels", help="The x_t the DEL was trained for."),
    pairs: int = typer.Option(300, "--pairs", min=2, help="Held-out pairs per band."),
    seed: int = typer.Option(12345, "--seed", help="Seed of the held-out vectors."),
) -> None:
    """Print DEL (f_int) and baseline fidelity per band of true error, as JSON."""
    from del_embed.evaluate import evaluate_del

    art = _artifact(model_dir)
    x_t = _labels_for(art, labels)
    typer.echo(json.dumps(evaluate_del(art.integer, x_t, pairs_per_band=pairs, seed=seed), indent=2))


@app.command("figures")
def figures_cmd(
    out: Path = typer.Option(..., "--out", help="Directory for the PNGs."),
    model_dir: Path = typer.Option(None, "--model", help="A trained DEL artifact (default: train a small one)."),
    labels: Path = typer.Option(None, "--labels", help="Its x_t (default: synthetic labels)."),
    inverse_epochs: int = typer.Option(8, "--inverse-epochs", min=1),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Write PNGs of the paper's Figures 1-5; print Figure 3's values beside the paper's."""
    from del_embed.figures import fig3_table, make_figures

    if (model_dir is None) != (labels is None):
        raise DELCommandError("--model and --labels go together")
    if model_dir is not None:
        art = _artifact(model_dir)
        x_t = _labels_for(art, labels)
    else:
        art, x_t = _small_demo_del(seed)
    paths = make_figures(out, art, x_t, inverse_epochs=inverse_epochs, seed=seed)
    typer.echo(json.dumps({"figures": [str(p) for p in paths], "fig3_ours_vs_paper": fig3_table()}, indent=2))


def _small_demo_del(seed: int):
    """A small DEL on synthetic labels, so ``figures`` works with no inputs (about a minute)."""
    from del_embed.model import DELConfig
    from del_embed.train import train_artifact

    x_t = np.random.default_rng(seed).integers(0, 10, size=1000)
    cfg = DELConfig(m=1000, hidden=64, n=64, steps=400, batch_size=128, seed=seed, lr=3e-3)
    with _Progress(cfg.steps, "training a small demo DEL (m=1000)") as on_step:
        art, _ = train_artifact(x_t, cfg, on_step=on_step)
    return art, x_t


@app.command("attack")
def attack_cmd(
    model_dir: Path = typer.Argument(..., help="Directory (or file) of a DEL artifact."),
    labels: Path = typer.Option(..., "--labels", help="The hidden x_t (used only to score the attack)."),
    seconds: float = typer.Option(60.0, "--seconds", min=1.0, help="Time limit per attack run."),
    nearby_error: float = typer.Option(0.15, "--nearby-error", min=0.0, max=1.0),
    inverse_epochs: int = typer.Option(5, "--inverse-epochs", min=1),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """White-box attacks on (f, y_t): greedy, relaxed, learned inverse, weight inspection; JSON rows."""
    from del_embed.bench_tables import attack_table

    art = _artifact(model_dir)
    x_t = _labels_for(art, labels)
    rows = attack_table(art.integer, x_t, seconds=seconds, nearby_error=nearby_error, seed=seed,
                        methods=("greedy", "relaxed", "inverse", "inspect"), inverse_epochs=inverse_epochs)
    typer.echo(json.dumps([r for r in _rows(rows)], indent=2))


def _rows(rows) -> Iterator[dict]:
    for r in rows:
        d = dict(r.__dict__)
        d["recovered"] = r.recovered
        yield d
