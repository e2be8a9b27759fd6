"""Seasons and tuples added while a problem runs (issue 16), off the network.

A real problem (``create_problem`` on the bundled digits, 2 sealed seasons) is applied to
an in-memory chain. ``FakeNode`` answers the few JSON-RPC calls the commands make from that
chain's state and runs every transaction through the chain's own ``process_transaction``,
so what the commands send is judged by the consensus rules, not by the test. The commands
run in-process through ``daimon_node.cli.app.main``, as a user runs them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest

from chain import constants as C
from chain.builder import build_problem_block
from chain.consensus import period_end
from chain.crypto import KeyPair, sha256
from chain.errors import ChainError
from chain.header import BlockHeader
from chain.outcome import memory_env
from chain.payloads import NewHoldout, Transaction
from chain.signing import EMPTY_SIGNATURE
from chain.state import get_account, get_meta, get_problem
from chain.txs import process_transaction
from chain.types import TestTuple

import daimon_node.cli.season as season_cli
from daimon_node.cli.app import main
from daimon_node.daemon.committer import build_problem
from daimon_node.daemon.holdouts import find_holdout, is_sealed, may_seal_now, next_to_seal, secret_holdouts
from daimon_node.daemon.admission import PROOF
from daimon_node.daemon.mempool import Mempool, Verdict
from daimon_node.keystore import init_data_dir, load_key
from daimon_node.proofs.problem_kit import ProblemOptions, create_problem, load_train_split
from daimon_node.rpc.errors import Rejected

T0 = 1_700_000_000


@dataclasses.dataclass
class Made:
    problem_dir: Path
    secret: Path
    key_dir: Path
    keys: KeyPair


@pytest.fixture
def made(tmp_path: Path) -> Made:
    key_dir = tmp_path / "creator"
    init_data_dir(key_dir)
    keys = load_key(key_dir)
    out = tmp_path / "digits"
    created = create_problem(out, keys, holdout_fraction=0.2, seasons=2, opts=ProblemOptions(t0=T0))
    return Made(out, created.secret_path, key_dir, keys)


def npz(path: Path, x: np.ndarray, y: np.ndarray) -> Path:
    np.savez(path, X=x, y=y)
    return path


def new_data(made: Made, name: str, rows: slice) -> Path:
    """Items of the problem's own published train split, saved as a user's .npz (the commands
    only check that data fits the problem; where it comes from is the contributor's business)."""
    x, y = load_train_split(made.problem_dir)
    return npz(made.problem_dir.parent / f"{name}.npz", x[rows], y[rows])


class FakeNode:
    """A node's JSON-RPC answers, from a chain state; transactions run through the chain's rules."""

    def __init__(self, made: Made, started: bool = True) -> None:
        from daimon_node.proofs.problem_kit import load_problem

        self.problem = load_problem(made.problem_dir)
        contents = {p_.name: p_.read_bytes() for p_ in made.problem_dir.iterdir() if len(p_.name) == 64}
        self.env = memory_env({bytes.fromhex(k): v for k, v in contents.items()})
        self.state = None
        if started:
            committer = KeyPair.from_label("unused")  # create_problem lists the creator as the committer
            committer = made.keys if made.keys.public_key in self.problem.params.committers else committer
            _, outcome = build_problem_block(self.problem.proposal, committer, period_end(self.problem.params, 0),
                                             self.env)
            self.state = outcome.state
        self.period = 1
        self.sent: list[Transaction] = []
        self.tuples: list[bytes] = []

    # --- the calls the commands make ------------------------------------------------------
    def get_problem(self, chain: bytes) -> dict[str, Any]:
        from daimon_node.proofs.problem_kit import problem_summary

        out = problem_summary(self.problem.proposal)
        if self.state is not None:
            meta = get_meta(self.state)
            season = meta.season
            out["d_c_ppb"] = list(meta.d_c)
            out["season"] = None if season is None else {"index": season.index, "sealed": season.holdout is not None,
                                                         "sealed_ahead": season.sealed_ahead}
        return out

    def block_number(self, chain: bytes) -> int:
        return -1 if self.state is None else get_meta(self.state).height

    def get_balance(self, chain: bytes, address: bytes) -> dict[str, str]:
        acct = get_account(self.state, address)
        return {"spendable": str(acct.balance), "locked": str(acct.locked)}

    def get_nonce(self, chain: bytes, address: bytes) -> int:
        return get_account(self.state, address).nonce

    def send_raw_transaction(self, chain: bytes, raw: bytes) -> str:
        tx = Transaction.decode(raw)
        header = BlockHeader(chain, 1, C.ZERO_HASH, C.KIND_IMPROVEMENT, self.period, 0, bytes(32), C.ZERO_HASH,
                             C.ZERO_HASH, EMPTY_SIGNATURE)
        state = self.state.copy()
        try:
            process_transaction(state, get_problem(state), header, tx)
        except ChainError as exc:
            raise Rejected(f"transaction rejected: {type(exc).__name__}") from None
        self.state = state
        self.sent.append(tx)
        return "0x" + tx.hash.hex()

    def submit_test_tuple(self, chain: bytes, raw: bytes) -> str:
        self.tuples.append(raw)
        return "0x" + bytes(32).hex()


@pytest.fixture
def node(made: Made, monkeypatch: pytest.MonkeyPatch) -> FakeNode:
    fake = FakeNode(made)

    @contextlib.contextmanager
    def connect(url: str) -> Iterator[FakeNode]:
        yield fake

    monkeypatch.setattr(season_cli, "connect", connect)
    return fake


def run(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["daimon-node", *args])
    code = 0
    try:
        main()
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def fails(monkeypatch, capsys, *args: str) -> str:  # type: ignore[no-untyped-def]
    code, _, err = run(monkeypatch, capsys, *args)
    assert code == 1 and "Traceback" not in err
    [line] = err.strip().splitlines()
    assert line.startswith("error: ")
    return line


def add_season_args(made: Made, data: Path, *extra: str) -> list[str]:
    return ["problem", "add-season", "--problem", str(made.problem_dir), "--data", str(data),
            "--key-dir", str(made.key_dir), *extra]


# ---------------------------------------------------------------------------
# problem add-season
# ---------------------------------------------------------------------------
def test_add_season_seals_a_holdout_the_chain_queues(made, node, monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    data = new_data(made, "fresh", slice(0, 60))
    code, out, _ = run(monkeypatch, capsys, *add_season_args(made, data, "--json"))
    assert code == 0
    sent = json.loads(out)
    [tx] = node.sent
    assert isinstance(tx.payload, NewHoldout) and tx.payload.holdout.m_h == 60
    season = get_meta(node.state).season
    assert season.index == 0 and season.sealed_ahead == 1 and sent["season"] == 1
    # the secret file now opens the new holdout, under the season the chain gave it
    held = secret_holdouts(made.secret, made.problem_dir)
    found = find_holdout(held, tx.payload.holdout.commitment, 1)
    assert found is not None and found.season == 1 and found.z_h_bytes is not None
    assert is_sealed(node.state, found)


def test_add_season_refuses_a_key_that_is_not_the_contributor(made, node, monkeypatch, capsys, tmp_path) -> None:  # type: ignore[no-untyped-def]
    other = tmp_path / "other"
    init_data_dir(other)
    args = add_season_args(made, new_data(made, "d", slice(0, 40)))
    args[args.index("--key-dir") + 1] = str(other)
    assert "not the problem's contributor" in fails(monkeypatch, capsys, *args)
    assert node.sent == []


def test_add_season_needs_new_data(made, node, monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    line = fails(monkeypatch, capsys, "problem", "add-season", "--problem", str(made.problem_dir),
                 "--key-dir", str(made.key_dir))
    assert "--data" in line


def test_add_season_refuses_data_of_other_classes(made, node, monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    x, _ = load_train_split(made.problem_dir)
    data = npz(made.problem_dir.parent / "cats.npz", x[:40], np.array(["cat", "dog"] * 20))
    assert "not the problem's" in fails(monkeypatch, capsys, *add_season_args(made, data))
    assert node.sent == []


def test_add_season_refuses_inputs_of_another_shape(made, node, monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    x, y = load_train_split(made.problem_dir)
    data = npz(made.problem_dir.parent / "wide.npz", np.concatenate([x[:40], x[:40]], axis=1), y[:40])
    assert "expected" in fails(monkeypatch, capsys, *add_season_args(made, data))


def test_add_season_before_the_problem_block(made, monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    fake = FakeNode(made, started=False)
    monkeypatch.setattr(season_cli, "connect", lambda url: contextlib.nullcontext(fake))
    assert "no Problem block yet" in fails(monkeypatch, capsys, *add_season_args(made, new_data(made, "d", slice(0, 40))))


def test_add_season_without_the_bond(made, node, monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    from chain.records import Account
    from chain.state import set_account

    acct = get_account(node.state, made.keys.address_bytes)
    bond = node.problem.params.contributor_bond
    set_account(node.state, made.keys.address_bytes, Account(bond - 1, acct.locked, acct.nonce))  # a fee short too
    line = fails(monkeypatch, capsys, *add_season_args(made, new_data(made, "d", slice(0, 40))))
    assert "contributor bond + fee" in line and node.sent == []


def test_add_season_beyond_the_seasons_kept_ahead(made, node, monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    from chain.holdouts import MAX_SEALED_AHEAD

    node.get_problem = lambda chain, real=node.get_problem: dict(  # type: ignore[method-assign]
        real(chain), season={"index": 0, "sealed": True, "sealed_ahead": MAX_SEALED_AHEAD})
    assert "already sealed ahead" in fails(monkeypatch, capsys, *add_season_args(made, new_data(made, "d", slice(0, 40))))


def test_add_season_the_same_data_twice(made, node, monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    data = new_data(made, "once", slice(0, 40))
    assert run(monkeypatch, capsys, *add_season_args(made, data))[0] == 0
    assert "already a holdout" in fails(monkeypatch, capsys, *add_season_args(made, data))
    assert len(node.sent) == 1


# ---------------------------------------------------------------------------
# The contributor's node: what it seals, and when
# ---------------------------------------------------------------------------
def test_the_contributor_seals_its_next_season_one_ahead(made, node) -> None:  # type: ignore[no-untyped-def]
    held = secret_holdouts(made.secret, made.problem_dir)
    assert len(held) == 2 and is_sealed(node.state, held[0]) and not is_sealed(node.state, held[1])
    assert next_to_seal(node.state, held) == held[1]
    problem = get_problem(node.state)
    season = get_meta(node.state).season
    assert may_seal_now(node.state, problem, season, made.keys.address_bytes)  # funded for a second bond
    assert not may_seal_now(node.state, problem, dataclasses.replace(season, sealed_ahead=1), made.keys.address_bytes)


# ---------------------------------------------------------------------------
# problem add-tuple, the pool and the Problem block
# ---------------------------------------------------------------------------
def add_tuple_args(made: Made, data: Path, *extra: str) -> list[str]:
    return ["problem", "add-tuple", "--problem", str(made.problem_dir), "--data", str(data),
            "--key-dir", str(made.key_dir), "--del-n", "64", *extra]


@pytest.fixture
def before_start(made: Made, monkeypatch: pytest.MonkeyPatch) -> FakeNode:
    fake = FakeNode(made, started=False)
    monkeypatch.setattr(season_cli, "connect", lambda url: contextlib.nullcontext(fake))
    monkeypatch.setattr(season_cli.time, "time", lambda: T0 + 1)  # inside T_p
    return fake


def test_add_tuple_during_t_p_sends_a_tuple_the_problem_block_carries(made, before_start, monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    code, out, _ = run(monkeypatch, capsys, *add_tuple_args(made, new_data(made, "t", slice(0, 80)), "--json"))
    assert code == 0 and json.loads(out)["m"] == 80
    [raw] = before_start.tuples
    tup = PROOF.decode(raw)  # the proofs topic carries it as it is
    assert isinstance(tup, TestTuple)
    proposal = before_start.problem.proposal
    env = memory_env({bytes.fromhex(p.name): p.read_bytes() for p in made.problem_dir.iterdir() if len(p.name) == 64})
    pool = Mempool(proposal.chain_id)
    assert pool.add_test_tuple(tup, proposal, started=False, now=T0 + 1, env=env) is Verdict.ACCEPT
    committer = made.keys
    block = build_problem(proposal, committer, period_end(proposal.params, 0), env, pool.test_tuples)
    assert block is not None and block.body.extra_tuples == (tup,)


def test_add_tuple_after_t_p(made, before_start, monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(season_cli.time, "time", lambda: period_end(before_start.problem.params, 0))
    assert "T_p is over" in fails(monkeypatch, capsys, *add_tuple_args(made, new_data(made, "t", slice(0, 80))))
    assert before_start.tuples == []


def test_add_tuple_once_the_problem_block_exists(made, node, monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(season_cli.time, "time", lambda: T0 + 1)
    assert "T_p is over" in fails(monkeypatch, capsys, *add_tuple_args(made, new_data(made, "t", slice(0, 80))))


def test_add_tuple_refuses_a_key_that_is_not_the_contributor(made, before_start, monkeypatch, capsys, tmp_path) -> None:  # type: ignore[no-untyped-def]
    other = tmp_path / "other"
    init_data_dir(other)
    args = add_tuple_args(made, new_data(made, "t", slice(0, 80)))
    args[args.index("--key-dir") + 1] = str(other)
    assert "not the problem's contributor" in fails(monkeypatch, capsys, *args)


def test_add_tuple_the_chain_would_refuse(made, before_start, monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    # inputs equal to the first tuple's: a duplicate (the chain's TupleDuplicate), caught before sending
    from daimon_node.proofs.problem_kit import load_npy

    first = before_start.problem.proposal.first_tuple
    z = load_npy((made.problem_dir / first.z_id.hex()).read_bytes())
    secret = json.loads(made.secret.read_text())
    x_t = np.frombuffer(bytes.fromhex(secret["x_t"]), dtype=np.uint8).astype(np.int64)
    line = fails(monkeypatch, capsys, *add_tuple_args(made, npz(made.problem_dir.parent / "dup.npz", z, x_t)))
    assert "TupleDuplicate" in line and before_start.tuples == []


def test_the_pool_refuses_a_strangers_tuple_and_takes_none_after_t_p(made) -> None:  # type: ignore[no-untyped-def]
    fake = FakeNode(made, started=False)
    proposal = fake.problem.proposal
    first = proposal.first_tuple
    stranger = KeyPair.from_label("stranger")
    from chain.signing import sign

    tup = sign(dataclasses.replace(first, z_id=bytes(32), contributor=stranger.public_key), stranger, proposal.chain_id)
    pool = Mempool(proposal.chain_id)
    assert pool.add_test_tuple(tup, proposal, started=False, now=T0 + 1, env=fake.env) is Verdict.REJECT
    assert pool.last_rule == "TupleNotByContributor"
    mine = sign(dataclasses.replace(first, z_id=bytes(32)), made.keys, proposal.chain_id)
    end = period_end(proposal.params, 0)
    assert pool.add_test_tuple(mine, proposal, started=False, now=end, env=fake.env) is Verdict.IGNORE
    assert pool.add_test_tuple(mine, proposal, started=True, now=T0 + 1, env=fake.env) is Verdict.IGNORE
    assert pool.add_test_tuple(mine, proposal, started=False, now=T0 + 1, env=fake.env) is Verdict.ACCEPT
    assert pool.add_test_tuple(mine, proposal, started=False, now=T0 + 1, env=fake.env) is Verdict.IGNORE  # known


def test_the_problem_block_leaves_out_a_tuple_whose_del_never_arrived(made) -> None:  # type: ignore[no-untyped-def]
    fake = FakeNode(made, started=False)
    proposal = fake.problem.proposal
    from chain.signing import sign

    tup = sign(dataclasses.replace(proposal.first_tuple, z_id=bytes(32), del_id=b"\x01" * 32), made.keys,
               proposal.chain_id)
    pool = Mempool(proposal.chain_id)
    assert pool.add_test_tuple(tup, proposal, started=False, now=T0 + 1, env=fake.env) is Verdict.ACCEPT  # kept
    block = build_problem(proposal, made.keys, period_end(proposal.params, 0), fake.env, pool.test_tuples)
    assert block is not None and block.body.extra_tuples == ()


# ---------------------------------------------------------------------------
# daimon_submitTestTuple (the node's backend, over a stand-in node)
# ---------------------------------------------------------------------------
class StandInNode:
    """The part of ``NodeAPI`` that ``NodeBackend.submit_test_tuple`` uses: one chain and the node's one
    admission path (a real ``Admitter``), with what it publishes recorded instead of gossiped."""

    def __init__(self, handle: Any, now: float) -> None:
        from daimon_node.daemon.admission import Admitter, NodeMetrics

        self.handle = handle
        self.published: list[tuple[str, bytes]] = []
        self.admitter = Admitter(lambda: now, lambda *event: None, self._publish, NodeMetrics())

    def chain(self, chain_id: bytes) -> Any:
        return self.handle if chain_id == self.handle.chain_id else None

    async def submit(self, handle: Any, kind: Any, raw: bytes) -> Any:
        from daimon_node.daemon.admission import Source

        return await self.admitter.submit(handle, kind, raw, Source.RPC)

    async def _publish(self, topic: str, data: bytes) -> None:
        self.published.append((topic, data))


@pytest.mark.trio
async def test_rpc_submit_test_tuple_pools_and_gossips_it_and_names_the_broken_rule(made) -> None:  # type: ignore[no-untyped-def]
    from chain.signing import sign

    from daimon_node.daemon.backend import NodeBackend

    fake = FakeNode(made, started=False)
    proposal = fake.problem.proposal
    handle = type("Handle", (), {"proposal": proposal, "chain_id": proposal.chain_id, "started": False,
                                 "env": fake.env, "mempool": Mempool(proposal.chain_id)})()
    node = StandInNode(handle, now=T0 + 1)
    backend = NodeBackend(node)  # type: ignore[arg-type]
    mine = sign(dataclasses.replace(proposal.first_tuple, z_id=bytes(32)), made.keys, proposal.chain_id)
    assert await backend.submit_test_tuple(proposal.chain_id, mine.encode()) == "0x" + sha256(mine.encode()).hex()
    assert handle.mempool.test_tuples == [mine]
    assert node.published == [(f"/daimon/{proposal.chain_id.hex()}/proofs", mine.encode())]
    stranger = KeyPair.from_label("stranger")
    theirs = sign(dataclasses.replace(mine, z_id=b"\x02" * 32, contributor=stranger.public_key), stranger,
                  proposal.chain_id)
    with pytest.raises(Rejected) as err:
        await backend.submit_test_tuple(proposal.chain_id, theirs.encode())
    assert err.value.rule == "TupleNotByContributor"  # the rule by name, for programs; never its text
    with pytest.raises(Rejected):
        await backend.submit_test_tuple(proposal.chain_id, b"\x93garbage")
    assert len(node.published) == 1


def test_model_submit_proves_on_every_tuple_the_chain_has(made) -> None:  # type: ignore[no-untyped-def]
    """``model submit`` builds its proof on the chain's tuples: the directory's first one and those
    added during T_p, which ``daimon_getProblem`` lists and ``daimon_getContent`` serves."""
    from chain.signing import sign

    from daimon_node.cli.model import chain_tuples
    from daimon_node.proofs.problem_kit import load_problem

    prob = load_problem(made.problem_dir)
    first = prob.proposal.first_tuple
    extra = sign(dataclasses.replace(first, z_id=first.z_id), made.keys, prob.chain_id)  # same content, for the test
    served = {first.z_id: (made.problem_dir / first.z_id.hex()).read_bytes(),
              first.del_id: (made.problem_dir / first.del_id.hex()).read_bytes()}
    client = type("Client", (), {"get_content": lambda _self, cid: served[cid]})()
    got = chain_tuples(client, prob, {"extra_tuples": ["0x" + extra.encode().hex()]})
    assert got.tuples == (first, extra) and len(got.dels) == len(got.z) == 2
    assert got.sizes()[:2] == [first.m, first.m]  # one label vector per tuple, then the holdout's
    assert chain_tuples(client, prob, {}) is prob
