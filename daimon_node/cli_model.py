"""``daimon-node model``: train example improvers, PROVE a model, VERIFY a proof.

Heavy libraries (scikit-learn, skl2onnx) load only inside the commands that
need them. Every failure a user can cause is a ``DaimonError``: ``main`` prints
it as one line and exits 1.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Optional

import typer

from .errors import DaimonError

app = typer.Typer(help="Train example models, prove a model's improvement, verify a proof.", no_args_is_help=True)

ProblemOption = typer.Option(..., "--problem", "-p", help="Problem directory (from 'problem create').")
KeyDirOption = typer.Option(Path(".daimon"), "--key-dir", "-k", help="Data directory holding the node key.")


class ModelCommandError(DaimonError):
    """A model command got a missing file or a bad option."""


def read_file(path: Path, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ModelCommandError(f"cannot read {what} {path}: {exc.strerror}") from None


def parse_hash(text: str, what: str) -> bytes:
    try:
        value = bytes.fromhex(text)
    except ValueError:
        value = b""
    if len(value) != 32:
        raise ModelCommandError(f"{what} must be 64 hex digits")
    return value


def write_private(path: Path, data: bytes) -> None:
    """Write with mode 0600: a reveal must not leak before its period."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def echo_json(obj: dict[str, Any]) -> None:
    typer.echo(json.dumps(obj, indent=2))


@app.command("train-example")
def train_example_cmd(
    out: Path = typer.Option(..., "--out", "-o", help="Directory for <name>.onnx files."),
    problem: Optional[Path] = typer.Option(None, "--problem", "-p", help="Train on this problem's train split "
                                           "(default: the default digits split of 'problem create')."),
    names: str = typer.Option("weak,linear,mlp", "--models", help="Comma-separated example names."),
) -> None:
    """Train example digits classifiers of different quality and export them to ONNX."""
    from .examples import EXAMPLES, train_example
    from .problem_kit import load_dataset, load_train_split, split_dataset

    chosen = tuple(n.strip() for n in names.split(",") if n.strip())
    unknown = [n for n in chosen if n not in EXAMPLES]
    if unknown or not chosen:
        raise ModelCommandError(f"unknown example models {unknown}; expected some of {', '.join(EXAMPLES)}")
    if problem is not None:
        x, y = load_train_split(problem)
    else:
        split = split_dataset(load_dataset("digits"))
        x, y = split.train_x, split.train_y
    out.mkdir(parents=True, exist_ok=True)
    result = {}
    for name in chosen:
        ex = train_example(name, x, y, int(y.max()) + 1)
        path = out / f"{name}.onnx"
        path.write_bytes(ex.onnx_bytes)
        result[name] = {"path": str(path), "bytes": len(ex.onnx_bytes), "train_accuracy": round(ex.train_accuracy, 4)}
    echo_json({"trained_on": len(y), "models": result})


@app.command("prove")
def prove_cmd(
    model: Path = typer.Argument(..., help="ONNX model file."),
    problem: Path = ProblemOption,
    key_dir: Path = KeyDirOption,
    period: int = typer.Option(1, "--period", help="Competition period k of the proof."),
    parent: str = typer.Option("00" * 32, "--parent", help="Head block hash at the period's start (hex)."),
    out: Path = typer.Option(..., "--out", "-o", help="Where to write the PoI (canonical bytes)."),
    reveal_out: Optional[Path] = typer.Option(None, "--reveal-out", help="Where to write the Reveal "
                                              "(default: OUT.reveal, mode 0600; publish it in period k+1)."),
) -> None:
    """PROVE a model: run it on the problem's inputs and write a signed PoI and its Reveal."""
    from .keystore import load_key
    from .poi import prove
    from .problem_kit import load_problem
    from .sandbox import Sandbox

    if period < 1:
        raise ModelCommandError("a proof is for a competition period k >= 1")
    parent_hash = parse_hash(parent, "--parent")
    keys = load_key(key_dir)
    prob = load_problem(problem)
    data = read_file(model, "model")
    with Sandbox() as sandbox:
        proof = prove(data, prob, keys, period=period, parent=parent_hash, sandbox=sandbox)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(proof.poi.encode())
    reveal_path = reveal_out or out.with_name(out.name + ".reveal")
    write_private(reveal_path, proof.reveal.encode())
    echo_json({
        "poi_hash": proof.poi.hash.hex(),
        "chain_id": proof.poi.chain_id.hex(),
        "period": proof.poi.period,
        "model_digest": proof.poi.model_digest.hex(),
        "labels_hash": proof.poi.labels_hash.hex(),
        "ambiguous": [len(a) for a in proof.poi.ambiguous],
        "distances_ppb": list(proof.distances),
        "prover": keys.address,
        "proof": str(out),
        "reveal": str(reveal_path),
    })


@app.command("verify")
def verify_cmd(
    proof: Path = typer.Argument(..., help="PoI file written by 'model prove'."),
    model: Path = typer.Option(..., "--model", "-m", help="The ONNX model the PoI names by digest."),
    problem: Path = ProblemOption,
    key_dir: Path = KeyDirOption,
    d_c: Optional[list[int]] = typer.Option(None, "--d-c", help="Current best distance per tuple in ppb "
                                            "(repeat per tuple; default 10^9, a new chain's)."),
    vote_out: Optional[Path] = typer.Option(None, "--vote-out", help="Write the signed vote here."),
) -> None:
    """VERIFY a PoI: re-run the model in the sandbox, check every rule, sign a vote."""
    from chain.errors import DecodeError
    from chain.types import PoI

    from .keystore import load_key
    from .poi import verify
    from .problem_kit import load_problem
    from .sandbox import Sandbox

    try:
        poi = PoI.decode(read_file(proof, "proof"))
    except DecodeError as exc:
        raise ModelCommandError(f"{proof} is not a PoI: {exc}") from None
    keys = load_key(key_dir)
    prob = load_problem(problem)
    data = read_file(model, "model")
    with Sandbox() as sandbox:
        verdict = verify(poi, data, prob, keys, sandbox=sandbox, d_c=d_c or None)
    if vote_out is not None:
        vote_out.parent.mkdir(parents=True, exist_ok=True)
        vote_out.write_bytes(verdict.vote.encode())
    echo_json({
        "valid": True,
        "poi_hash": poi.hash.hex(),
        "distances_ppb": list(verdict.distances),
        "labels_digest": verdict.vote.labels_digest.hex(),
        "validator": keys.address,
        "vote": str(vote_out) if vote_out is not None else verdict.vote.encode().hex(),
    })
