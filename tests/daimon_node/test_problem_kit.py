"""The contributor's problem kit and the ``problem`` / ``model`` commands."""

from __future__ import annotations

import hashlib
import json
import stat
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from chain.builder import build_problem_block
from chain.consensus import period_end
from chain.crypto import KeyPair
from chain.labels import array_to_labels
from chain.season import holdout_commitment
from chain.signing import check_signature
from chain.outcome import memory_env
from chain.proofs import PoI, Vote
from chain.types import Proposal
from daimon_node.cli.app import app
from daimon_node.keystore import init_data_dir
from daimon_node.proofs.problem_errors import ProblemKitError
from daimon_node.proofs.problem_kit import (
    PROBLEM_FILE,
    PROPOSAL_FILE,
    create_problem,
    load_npy,
    load_problem,
    load_train_split,
    read_secret,
)
from daimon_node.proofs.splits import load_dataset, split_dataset
from daimon_node.proofs.problem_params import ProblemOptions
from del_embed.integer import f_int

CREATOR = KeyPair.from_label("kit-creator")


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    return create_problem(tmp_path_factory.mktemp("kit") / "digits", CREATOR, holdout_fraction=0.2,
                          opts=ProblemOptions(t0=1_700_000_000))


def test_split_is_deterministic_and_disjoint() -> None:
    ds = load_dataset("digits")
    a = split_dataset(ds, test_fraction=0.3, holdout_fraction=0.2)
    b = split_dataset(ds, test_fraction=0.3, holdout_fraction=0.2)
    np.testing.assert_array_equal(a.test_x, b.test_x)
    assert a.holdout_x is not None and a.holdout_y is not None
    assert len(a.train_y) + len(a.test_y) + len(a.holdout_y) == len(ds.y) == 1797
    rows = {r.tobytes() for r in a.train_x}
    # digits has a few duplicate images, so compare index-free: almost no test row is a train row
    assert sum(r.tobytes() in rows for r in a.test_x) <= 3
    with pytest.raises(ProblemKitError):
        split_dataset(ds, test_fraction=0.9, holdout_fraction=0.2)


@pytest.mark.timeout(60)
def test_problem_directory_is_content_addressed(made) -> None:  # type: ignore[no-untyped-def]
    d: Path = made.directory
    proposal = Proposal.decode((d / PROPOSAL_FILE).read_bytes())
    check_signature(proposal)
    check_signature(proposal.first_tuple)
    summary = json.loads((d / PROBLEM_FILE).read_text())
    assert summary["chain_id"] == hashlib.sha256((d / PROPOSAL_FILE).read_bytes()).hexdigest() == proposal.chain_id.hex()
    ids = [proposal.first_tuple.z_id, proposal.first_tuple.del_id, proposal.holdout.z_h_id]
    for cid in ids:
        assert hashlib.sha256((d / cid.hex()).read_bytes()).digest() == cid
    assert summary["params"]["num_classes"] == 10 and summary["params"]["season_periods"] > 0
    x, y = load_train_split(d)
    assert x.shape == (len(y), 64) and len(y) == summary["dataset"]["train"]


@pytest.mark.timeout(60)
def test_secrets_stay_private_and_match_the_commitments(made) -> None:  # type: ignore[no-untyped-def]
    secret_path: Path = made.secret_path
    assert secret_path.parent == made.directory.parent  # beside, not inside, the published directory
    assert stat.S_IMODE(secret_path.stat().st_mode) == 0o600
    secret = read_secret(secret_path)
    problem = made.problem
    assert problem.holdout is not None
    assert holdout_commitment(secret["salt"], array_to_labels(secret["x_h"])) == problem.holdout.commitment
    assert f_int(problem.dels[0], secret["x_t"]) == problem.tuples[0].y_t
    published = b"".join(p.read_bytes() for p in made.directory.iterdir())
    assert secret["salt"] not in published


@pytest.mark.timeout(60)
def test_load_problem_round_trip_and_the_chain_accepts_it(made) -> None:  # type: ignore[no-untyped-def]
    loaded = load_problem(made.directory)
    assert loaded.chain_id == made.problem.chain_id
    np.testing.assert_array_equal(loaded.z[0], made.problem.z[0])
    assert loaded.z_h is not None and loaded.z_h.shape == (loaded.holdout.m_h, 64)
    tup = loaded.tuples[0]
    env = memory_env({tup.del_id: (made.directory / tup.del_id.hex()).read_bytes()})
    _, out = build_problem_block(loaded.proposal, CREATOR, period_end(loaded.params, 0), env)
    assert out.state.head != b"\x00" * 32


@pytest.mark.timeout(60)
def test_invalid_content_file_is_refused(made, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(made.directory, copy)
    z_file = copy / made.problem.tuples[0].z_id.hex()
    data = bytearray(z_file.read_bytes())
    data[-1] ^= 1
    z_file.write_bytes(bytes(data))
    with pytest.raises(ProblemKitError, match="does not match its id"):
        load_problem(copy)


def test_invalid_pickled_npy_is_refused() -> None:
    import io

    buf = io.BytesIO()
    np.save(buf, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ProblemKitError):
        load_npy(buf.getvalue())


@pytest.mark.timeout(120)
def test_cli_create_show_train_prove_verify(tmp_path: Path) -> None:
    runner = CliRunner()
    creator, validator = tmp_path / "creator", tmp_path / "validator"
    init_data_dir(creator, seed=b"\x01" * 32)
    init_data_dir(validator, seed=b"\x02" * 32)
    prob, models = tmp_path / "prob", tmp_path / "models"

    r = runner.invoke(app, ["problem", "create", "--out", str(prob), "--key-dir", str(creator), "--t0", "1700000000"])
    assert r.exit_code == 0, r.output
    created = json.loads(r.output)
    chain_id = created["chain_id"]
    # one season by default: on digits m_h = 359, and the margin is what that holdout resolves
    assert created["m_h"] == 359 and created["holdout_margin_ppb"] == 110_000_000
    assert 0 < created["consistency_ppb"] < 10**9
    r = runner.invoke(app, ["problem", "show", str(prob)])
    assert r.exit_code == 0 and json.loads(r.output)["chain_id"] == chain_id

    r = runner.invoke(app, ["model", "train-example", "--out", str(models), "--problem", str(prob), "--models", "weak,mlp"])
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in models.iterdir()) == ["mlp.onnx", "weak.onnx"]

    proofs = {}
    for name in ("weak", "mlp"):
        out = tmp_path / f"{name}.poi"
        r = runner.invoke(app, ["model", "prove", str(models / f"{name}.onnx"), "--problem", str(prob),
                                "--key-dir", str(creator), "--period", "3", "--out", str(out)])
        assert r.exit_code == 0, r.output
        proofs[name] = json.loads(r.output)
        poi = PoI.decode(out.read_bytes())
        assert poi.period == 3 and poi.chain_id.hex() == chain_id
        assert stat.S_IMODE(Path(proofs[name]["reveal"]).stat().st_mode) == 0o600
    better = proofs["mlp"]["distances_ppb"][0]
    assert better < proofs["weak"]["distances_ppb"][0]

    vote_file = tmp_path / "mlp.vote"
    r = runner.invoke(app, ["model", "verify", str(tmp_path / "mlp.poi"), "--model", str(models / "mlp.onnx"),
                            "--problem", str(prob), "--key-dir", str(validator), "--vote-out", str(vote_file)])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["valid"] is True
    vote = Vote.decode(vote_file.read_bytes())
    check_signature(vote, bytes.fromhex(chain_id))

    r = runner.invoke(app, ["model", "verify", str(tmp_path / "weak.poi"), "--model", str(models / "weak.onnx"),
                            "--problem", str(prob), "--key-dir", str(validator), "--d-c", str(better)])
    assert r.exit_code == 1
    assert "does not beat d_c" in str(r.exception)


ALICE, BOB = "aa" * 20, "0x" + "bb" * 20


def test_cli_create_sets_the_economics(tmp_path: Path) -> None:
    creator = tmp_path / "creator"
    init_data_dir(creator, seed=b"\x03" * 32)
    prob = tmp_path / "prob"
    r = CliRunner().invoke(app, [
        "problem", "create", "--out", str(prob), "--key-dir", str(creator), "--t0", "1700000000",
        "--reward-a", "5", "--reward-scale", "3000", "--validator-bond", "70", "--improver-bond", "9",
        "--contributor-bond", "123456", "--max-votes", "7", "--quorum-ppb", "800000000",
        "--unbonding-periods", "3", "--reveal-window", "4", "--season-periods", "6", "--min-fee", "2",
        "--committer-bond", "500", "--committer-delay", "3", "--committer-miss-limit", "4",
        "--alloc", f"{ALICE}=1000", "--alloc", f"{BOB}=25"])
    assert r.exit_code == 0, r.output
    p = load_problem(prob).params
    assert (p.reward_a, p.reward_scale, p.validator_bond, p.improver_bond, p.contributor_bond) == (5, 3000, 70, 9, 123456)
    assert (p.max_votes, p.quorum_ppb, p.unbonding_periods, p.reveal_window, p.season_periods, p.min_fee) == \
        (7, 800_000_000, 3, 4, 6, 2)
    assert (p.committer_bond, p.committer_delay, p.committer_miss_limit) == (500, 3, 4)
    assert [(a.address.hex(), a.amount) for a in p.genesis] == [("aa" * 20, 1000), ("bb" * 20, 25)]


# One case per rule the chain's validate_params (or the --alloc parser) applies to a flag: the flag
# and the word that says what is wrong, in one line, and nothing written.
BAD_ECONOMICS = {
    "reward-a low": (["--reward-a", "0"], "--reward-a 0: the chain requires reward_a in 1..64"),
    "reward-a high": (["--reward-a", "65"], "--reward-a 65: the chain requires reward_a in 1..64"),
    "reward-scale": (["--reward-scale", str(1 << 120)], "--reward-scale"),
    "validator-bond": (["--validator-bond", "0"], "--validator-bond 0: the chain requires validator_bond at least 1"),
    "improver-bond": (["--improver-bond", "0"], "--improver-bond 0: the chain requires improver_bond at least 1"),
    "contributor-bond": (["--contributor-bond", "1"], "--contributor-bond 1: below what one season can mint"),
    "max-votes": (["--max-votes", "0"], "--max-votes 0: the chain requires max_votes in 1..256"),
    "quorum": (["--quorum-ppb", "500000000"], "--quorum-ppb 500000000: the chain requires more than half"),
    "unbonding": (["--unbonding-periods", "1"], "--unbonding-periods 1: the chain requires unbonding_periods at least 2"),
    "reveal-window": (["--reveal-window", "0"], "--reveal-window 0: the chain requires reveal_window at least 1"),
    "season-periods": (["--season-periods", "0"], "--season-periods 0: the chain requires season_periods at least 1"),
    "committer-delay": (["--committer-bond", "5", "--committer-delay", "0"],
                        "--committer-delay 0: a committer set that changes by transaction needs a delay of 1..32"),
    "alloc shape": (["--alloc", "aa"], "is not ADDRESS=AMOUNT"),
    "alloc twice": (["--alloc", f"{ALICE}=1", "--alloc", f"0x{ALICE}=2"], "twice"),
    "alloc address": (["--alloc", "abcd=1"], "40 hex digits"),
    "alloc supply": (["--alloc", f"{ALICE}={1 << 127}", "--alloc", f"{BOB}={1 << 127}"],
                     "exceeds the largest amount the chain encodes"),
}


@pytest.mark.parametrize("case", list(BAD_ECONOMICS))
def test_cli_create_refuses_a_bad_economic_parameter_in_one_line(tmp_path: Path, case: str) -> None:
    from daimon_node.errors import DaimonError

    flags, expected = BAD_ECONOMICS[case]
    creator = tmp_path / "creator"
    init_data_dir(creator, seed=b"\x04" * 32)
    prob = tmp_path / "prob"
    r = CliRunner().invoke(app, ["problem", "create", "--out", str(prob), "--key-dir", str(creator), *flags])
    assert r.exit_code == 1 and isinstance(r.exception, DaimonError), (r.output, r.exception)
    message = str(r.exception)
    assert expected in message and "\n" not in message, message
    assert not (prob / PROPOSAL_FILE).exists()
