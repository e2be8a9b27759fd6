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

from daimon_node.errors import DaimonError
from daimon_node.cli.txcommand import TxOptions, open_tx, tx_command

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
    from daimon_node.harness.examples import EXAMPLES, train_example
    from daimon_node.proofs.problem_kit import load_train_split
    from daimon_node.proofs.splits import load_dataset, split_dataset

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
    from daimon_node.keystore import load_key
    from daimon_node.proofs.poi import prove
    from daimon_node.proofs.problem_kit import load_problem
    from daimon_node.proofs.sandbox import Sandbox

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
    from chain.proofs import PoI

    from daimon_node.keystore import load_key
    from daimon_node.proofs.poi import verify
    from daimon_node.proofs.problem_kit import load_problem
    from daimon_node.proofs.sandbox import Sandbox

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


# --- commands that talk to a node ----------------------------------------------------------
RpcOption = typer.Option("http://127.0.0.1:8545", "--rpc", envvar="DAIMON_RPC", help="JSON-RPC URL of a node.")
JsonOption = typer.Option(False, "--json", help="Print one JSON document (for scripts).")
ChainOption = typer.Option(None, "--chain", "-c", help="Problem chain id (64 hex digits or a unique 8+ digit "
                           "prefix); default: the problem's (submit, reveal) or the node's only chain.")


@app.command("register")
@tx_command
def register_cmd(opts: TxOptions, model: Path = typer.Argument(..., help="ONNX model file.")) -> None:
    """Claim a model on a chain (a RegisterDigest tx of ``H(your key || digest)``, so a copy of the tx
    claims it for you, not for the copier); its PoI may follow once a block holds it."""
    from chain.payloads import RegisterDigest
    from chain.proofs import model_claim

    from daimon_node.proofs.poi import model_digest

    data = read_file(model, "model")
    digest = model_digest(data)
    with open_tx(opts) as tx:
        if len(data) > int(tx.params["max_model_bytes"]):
            raise ModelCommandError(f"{model} has {len(data)} bytes; the problem allows {tx.params['max_model_bytes']}")
        claim = model_claim(tx.keys.public_key, digest)
        tx.report(tx.send(RegisterDigest(claim)), "register_digest", model_digest=digest.hex(), claim=claim.hex())
    if not opts.as_json:
        typer.echo(f"model digest {digest.hex()}")


def chain_tuples(client: Any, prob: Any, summary: dict[str, Any]) -> Any:
    """The problem with the test tuples added during T_p (``extra_tuples``, from the node): a
    proof carries one embedding per tuple of the chain, not only the directory's first one."""
    import dataclasses

    from chain.types import TestTuple
    from del_embed.integer import integer_del_from_bytes

    from daimon_node.proofs.problem_kit import check_inputs, load_npy

    extra = [TestTuple.decode(bytes.fromhex(raw[2:])) for raw in summary.get("extra_tuples", [])]
    if not extra:
        return prob
    dels = tuple(integer_del_from_bytes(client.get_content(t.del_id)) for t in extra)
    zs = tuple(check_inputs(load_npy(client.get_content(t.z_id)), t.m, prob.params.input_spec) for t in extra)
    return dataclasses.replace(prob, tuples=(*prob.tuples[:1], *extra), dels=(*prob.dels[:1], *dels),
                               z=(*prob.z[:1], *zs))


def season_problem(client: Any, prob: Any, summary: dict[str, Any]) -> Any:
    """The problem as the chain has it now: the season's sealed ``Z_h`` and, once a model is
    confirmed, that model (its labels on ``Z_h`` go into the proof), fetched from the node."""
    import dataclasses

    from chain.proofs import SealedHoldout

    from daimon_node.proofs.problem_kit import check_inputs, load_npy

    prob = chain_tuples(client, prob, summary)
    season = summary.get("season")
    if season is None:
        return prob
    holdout = season.get("holdout")
    if holdout is None:
        raise ModelCommandError(f"season {season['index']} has no sealed holdout yet: no proof can be anchored "
                                "until the contributor seals one")
    sealed = SealedHoldout(bytes.fromhex(holdout["z_h_id"][2:]), holdout["m_h"], bytes.fromhex(holdout["commitment"][2:]))
    if prob.holdout is not None and prob.holdout.z_h_id == sealed.z_h_id:
        z_h = prob.z_h
    else:
        z_h = check_inputs(load_npy(client.get_content(sealed.z_h_id)), sealed.m_h, prob.params.input_spec)
    confirmed = season.get("confirmed_model")
    model = client.get_content(confirmed) if confirmed else None
    return dataclasses.replace(prob, holdout=sealed, z_h=z_h, confirmed_model=model)


def _wait_for_proving_slot(client: Any, chain: bytes, params: Any, deadline: float) -> tuple[int, dict[str, Any]]:
    """Period k >= 1 and the head to build on, once the head is settled for k (as the improver role does).

    The head is ready when its block is of period k-1 or later, or when the grace time
    of period k has passed; near a period's end (last 10%) wait for the next one.
    """
    import time

    from daimon_node.cli.chain import head_block

    t_b, grace = params.t_b, params.grace
    while True:
        info = client.period(chain)
        k, remaining = info["period"], info["remaining"]
        head = head_block(client, chain)
        elapsed = t_b - remaining
        if k >= 1 and remaining > 0.1 * t_b and (head["period"] >= k - 1 or elapsed >= grace):
            return k, head
        if k == 0 and time.monotonic() + remaining > deadline:
            raise ModelCommandError(f"the chain is in T_p (problem definition) for {remaining:.0f} s more; "
                                    "proofs start in period 1")
        if time.monotonic() >= deadline:
            raise ModelCommandError(f"no time to prove: period {k}, {remaining:.1f} s left, head of period "
                                    f"{head['period']}; try again (or raise --timeout)")
        time.sleep(min(0.5, max(0.05, remaining / 4)))


@app.command("submit")
def submit_cmd(
    model: Path = typer.Argument(..., help="ONNX model file (its digest registered on the chain)."),
    problem: Path = ProblemOption,
    chain: Optional[str] = ChainOption,
    key_dir: Path = KeyDirOption,
    reveal_out: Optional[Path] = typer.Option(None, "--reveal-out", help="Where to write the Reveal (mode 0600; "
                                              "default: MODEL.p<k>.reveal)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Also write the PoI here."),
    force: bool = typer.Option(False, "--force", help="Submit even if the model does not beat d_c - delta."),
    rpc: str = RpcOption,
    timeout: float = typer.Option(0.0, "--timeout", help="Seconds to wait for a period to prove in "
                                  "(0: one period plus grace)."),
    as_json: bool = JsonOption,
) -> None:
    """PROVE a model for the current period on the chain's head and submit its PoI; write the Reveal for next period."""
    from daimon_node.cli.chain import connect, resolve_chain
    from daimon_node.keystore import load_key
    from daimon_node.proofs.poi import model_digest
    from daimon_node.proofs.problem_kit import load_problem

    keys = load_key(key_dir)
    prob = load_problem(problem)
    data = read_file(model, "model")
    with connect(rpc) as client:
        chain_id = prob.chain_id if chain is None else resolve_chain(client, chain)
        if chain_id != prob.chain_id:
            raise ModelCommandError(f"{problem} is the problem of chain {prob.chain_id.hex()[:16]}, "
                                    f"not of --chain {chain_id.hex()[:16]}")
        summary = client.get_problem(chain_id)
        if "d_c_ppb" not in summary:
            raise ModelCommandError(f"chain {chain_id.hex()[:16]} has no Problem block yet")
        prob = season_problem(client, prob, summary)
        params = prob.proposal.params
        k, head, proof = _prove_on_head(client, chain_id, prob, keys, data, timeout)
        d_c = summary["d_c_ppb"]
        better = _improves(proof.distances, d_c, params.delta_ppb, force)
        poi_hash = _hand_over(client, chain_id, data, keys, proof)
    reveal_path = reveal_out or model.with_name(f"{model.name}.p{k}.reveal")
    write_private(reveal_path, proof.reveal.encode())
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(proof.poi.encode())
    next_cmd = f"daimon-node model reveal {reveal_path} --chain {chain_id.hex()} --rpc {rpc}"
    if as_json:
        echo_json({
            "poi_hash": poi_hash, "chain": "0x" + chain_id.hex(), "period": k, "parent": head["hash"],
            "model_digest": model_digest(data).hex(), "distances_ppb": list(proof.distances), "d_c_ppb": d_c,
            "improves": better, "prover": keys.address, "reveal": str(reveal_path),
            "proof": str(out) if out is not None else None, "reveal_period": k + 1, "next": next_cmd,
        })
        return
    _print_submitted(poi_hash, k, head, proof.distances, d_c, reveal_path, next_cmd)


def _improves(distances: Any, d_c: list[int], delta: int, force: bool) -> bool:
    """Whether the proof beats ``d_c - delta`` on every tuple; refused here (no vote would come) unless ``force``."""
    better = all(d < dc - delta for d, dc in zip(distances, d_c))
    if not better and not force:
        raise ModelCommandError(
            f"distance {', '.join(map(str, distances))} ppb does not beat d_c {', '.join(map(str, d_c))} "
            f"- delta {delta}; validators would not vote for it (--force submits anyway)")
    return better


def _hand_over(client: Any, chain_id: bytes, data: bytes, keys: Any, proof: Any) -> str:
    """The model to the node (it keeps and serves it: validators fetch it by digest over p2p), then the PoI."""
    from daimon_node.rpc.errors import Rejected

    try:
        client.submit_model(chain_id, data, keys.public_key)
        return str(client.submit_proof(chain_id, proof.poi.encode()))
    except Rejected as exc:
        hint = ("; register the model first ('daimon-node model register --wait') and submit once a block "
                "holds the registration" if exc.rule == "ModelNotClaimed" else "")
        raise ModelCommandError(f"{exc}{hint}") from None


def _prove_on_head(client: Any, chain_id: bytes, prob: Any, keys: Any, data: bytes, timeout: float) -> tuple[int, dict[str, Any], Any]:
    """PROVE for the current period on the current head, again if either moved on while proving."""
    import time

    from daimon_node.cli.chain import head_block, parse_hex
    from daimon_node.proofs.poi import prove
    from daimon_node.proofs.sandbox import Sandbox

    params = prob.proposal.params
    deadline = time.monotonic() + (timeout if timeout > 0 else params.t_b + params.grace + 5)
    with Sandbox() as sandbox:
        while True:
            k, head = _wait_for_proving_slot(client, chain_id, params, deadline)
            proof = prove(data, prob, keys, period=k, parent=parse_hex(head["hash"], 32, "head"), sandbox=sandbox)
            if client.period(chain_id)["period"] == k and head_block(client, chain_id)["hash"] == head["hash"]:
                return k, head, proof  # still the period and head the proof was built on
            if time.monotonic() >= deadline:
                raise ModelCommandError("the chain moved on while proving; try again (or raise --timeout)")


def _print_submitted(poi_hash: str, k: int, head: dict[str, Any], distances: Any, d_c: list[int], reveal_path: Path,
                     next_cmd: str) -> None:
    typer.echo(poi_hash)
    typer.echo(f"PoI for period {k} on head {head['hash'][:18]}...: distance "
               f"{', '.join(f'{d / 1e9:.6f}' for d in distances)} (d_c {', '.join(f'{d / 1e9:.6f}' for d in d_c)})")
    typer.echo(f"reveal written to {reveal_path} (keep it private until period {k + 1})")
    typer.echo(f"if the block of period {k} anchors the PoI, publish the reveal during period {k + 1}:")
    typer.echo(f"  {next_cmd}")


ANCHOR_LOOKBACK = 8


def find_anchor(client: Any, chain: bytes, poi_hash: str) -> dict[str, Any] | None:
    """The latest of the head's last ``ANCHOR_LOOKBACK`` blocks that anchors ``poi_hash``, or None."""
    height = client.block_number(chain)
    for n in range(height, max(0, height - ANCHOR_LOOKBACK), -1):
        block = client.get_block_by_number(chain, n)
        if block is not None and (block.get("anchor") or {}).get("poi") == poi_hash:
            return block  # type: ignore[no-any-return]
    return None


def wait_for_reveal_period(client: Any, chain: bytes, poi_hash: str, timeout: float) -> None:
    """Return once a block anchors ``poi_hash`` and the clock is in the period after it, or once the
    wait is over (the caller then says why it cannot send). The default bound: a PoI submitted in
    period k is anchored by the block made at k's end, at most ``grace`` late, and revealed in k + 1,
    so two periods plus grace cover it from any moment of k."""
    import time

    params = client.get_problem(chain)["params"]
    deadline = time.monotonic() + (timeout if timeout > 0 else 2 * int(params["t_b"]) + int(params["grace"]))
    while time.monotonic() < deadline:
        anchored = find_anchor(client, chain, poi_hash)
        info = client.period(chain)
        if anchored is not None and info["period"] > anchored["period"]:
            return
        time.sleep(min(0.5, max(0.05, info["remaining"] / 4)))


@app.command("reveal")
def reveal_cmd(
    reveal_file: Path = typer.Argument(..., help="Reveal file written by 'model submit' or 'model prove'."),
    chain: Optional[str] = ChainOption,
    force: bool = typer.Option(False, "--force", help="Send even if the PoI is not seen anchored in the "
                               "previous period."),
    wait: bool = typer.Option(False, "--wait", help="Wait for the block that anchors the PoI and for the "
                              "next period, then send (run it right after 'model submit')."),
    timeout: float = typer.Option(0.0, "--timeout", help="Seconds --wait waits at most (0: two periods plus grace)."),
    rpc: str = RpcOption,
    as_json: bool = JsonOption,
) -> None:
    """Publish a Reveal (the labels of an anchored PoI) during the period after its anchor."""
    from chain.errors import DecodeError
    from chain.proofs import Reveal

    from daimon_node.cli.chain import connect, resolve_chain

    try:
        reveal = Reveal.decode(read_file(reveal_file, "reveal"))
    except DecodeError as exc:
        raise ModelCommandError(f"{reveal_file} is not a Reveal: {exc}") from None
    with connect(rpc) as client:
        if chain is not None and resolve_chain(client, chain) != reveal.chain_id:
            raise ModelCommandError(f"{reveal_file} is a reveal for chain {reveal.chain_id.hex()[:16]}, "
                                    f"not for {chain[:18]}")
        if wait:
            wait_for_reveal_period(client, reveal.chain_id, "0x" + reveal.poi_hash.hex(), timeout)
        period = client.period(reveal.chain_id)["period"]
        anchored = find_anchor(client, reveal.chain_id, "0x" + reveal.poi_hash.hex())
        if not force:
            if anchored is None:
                raise ModelCommandError(f"PoI {reveal.poi_hash.hex()[:16]} is not anchored in the chain's last "
                                        f"{ANCHOR_LOOKBACK} blocks: nothing to settle (publishing the labels early "
                                        "would let others copy them; --force sends anyway)")
            if period != anchored["period"] + 1:
                when = "too early" if period <= anchored["period"] else "too late: the anchor was voided"
                raise ModelCommandError(f"PoI {reveal.poi_hash.hex()[:16]} was anchored in period "
                                        f"{anchored['period']}; its reveal belongs to period {anchored['period'] + 1}, "
                                        f"now is period {period} ({when})")
        result = client.submit_reveal(reveal.chain_id, reveal.encode())
    if as_json:
        echo_json({"poi_hash": result, "chain": "0x" + reveal.chain_id.hex(), "period": period,
                   "anchored_at": None if anchored is None else anchored["height"]})
        return
    typer.echo(result)
    typer.echo(f"reveal of PoI {reveal.poi_hash.hex()[:16]} sent in period {period}; the block of this period "
               "settles it")
