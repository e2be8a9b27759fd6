"""Issue 16 live: a problem runs its seasons by itself, and takes one more while it runs.

Two node processes on 127.0.0.1. The problem is created with K = 2 sealed seasons; node 0
is its contributor (the role reads the secret file), node 1 improves. Nobody touches the
chain until season 1 is sealed: then ``problem add-season`` (a subprocess, as a user runs
it) seals a third season from new data through node 0's RPC. The test only watches: every
season must be revealed by the contributor's node, each next one sealed *before* the
previous one's reveal (so it opens in the judging block, with no period in between), and
after the last one the competition stops (the season record stays closed).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from chain.payloads import NewHoldout
from chain.locks import CONTRIBUTOR_BOND, locked_parts
from chain.state import get_meta
from daimon_node.daemon.replay import replay_chain
from daimon_node.harness.testnet import Testnet, prepare_testnet
from daimon_node.proofs.problem_kit import load_train_split
from netutil import free_base_port, try_call, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(400)]

T_P, T_B, GRACE = 8, 5, 2
S, W = 3, 2  # season and reveal window, in periods
START_DELAY = 4
SEASONS = 3  # 2 from problem create, 1 from add-season
# Each season takes S periods plus up to W to reveal, and the next opens in the judging block;
# one spare period per season covers a block committed out of turn (after the grace).
RUN_S = START_DELAY + T_P + SEASONS * (S + W + 1) * T_B


def test_seasons_roll_by_themselves_and_a_season_added_live_runs_too(tmp_path: Path) -> None:
    plan = prepare_testnet(tmp_path / "net", 2, t_p=T_P, t_b=T_B, grace=GRACE, base_port=free_base_port(2),
                           start_delay=START_DELAY, holdout_fraction=0.2, seasons=2, season_periods=S,
                           reveal_window=W)
    chain = "0x" + plan.chain_id.hex()
    port = plan.rpc_ports[1]
    x, y = load_train_split(plan.problem_dir)
    fresh = tmp_path / "fresh.npz"
    np.savez(fresh, X=x[:120], y=y[:120])
    net = Testnet(plan)
    net.start()
    try:
        def season() -> dict[str, Any] | None:
            summary = try_call(port, lambda c: c.get_problem(chain))
            return None if summary is None else summary.get("season")

        wait_for("season 1 sealed ahead", lambda: (s := season()) is not None and (
            s["index"] >= 1 or s["sealed_ahead"] >= 1), RUN_S)
        added = subprocess.run(
            [sys.executable, "-m", "daimon_node.cli", "problem", "add-season", "--problem", str(plan.problem_dir),
             "--data", str(fresh), "--key-dir", str(plan.directory / "node0"),
             "--rpc", f"http://127.0.0.1:{plan.rpc_ports[0]}", "--json"],
            capture_output=True, text=True, timeout=120)
        assert added.returncode == 0, added.stderr
        wait_for("every season revealed", lambda: (s := season()) is not None and s["index"] >= SEASONS, RUN_S)
        assert net.alive() == [0, 1]
    finally:
        net.stop()

    replay = replay_chain(plan.directory / "node1", plan.chain_id)
    notes = [(b.header.period, r.season) for b, r in zip(replay.blocks, replay.receipts) if r.season]
    revealed = [period for period, note in notes if "revealed" in note]
    assert [note.split(":")[0] for _, note in notes] == [f"season {k} revealed" for k in range(SEASONS)], notes
    sealed = [b.header.period for b in replay.blocks[1:] for tx in b.body.transactions
              if isinstance(tx.payload, NewHoldout)]
    assert len(sealed) == SEASONS - 1
    # each later season was sealed before the reveal that closed the one before it
    assert all(s < r for s, r in zip(sorted(sealed), revealed)), (sealed, revealed)
    meta = get_meta(replay.state)
    assert meta.season.index == SEASONS and meta.season.holdout is None  # the last season is over
    parts = locked_parts(replay.state, plan.keys[0].address_bytes).parts  # node 0 also holds a validator bond
    assert [p for p in parts if p.kind == CONTRIBUTOR_BOND] == []  # every contributor bond came back


T_P_TUPLE = 24  # T_p long enough for the add-tuple subprocess (it loads numpy and the problem) on a busy machine


def test_a_tuple_added_during_t_p_is_in_the_problem_block_and_scores_proofs(tmp_path: Path) -> None:
    plan = prepare_testnet(tmp_path / "net", 2, t_p=T_P_TUPLE, t_b=T_B, grace=GRACE, base_port=free_base_port(2),
                           start_delay=START_DELAY)
    chain = "0x" + plan.chain_id.hex()
    x, y = load_train_split(plan.problem_dir)
    extra = tmp_path / "extra.npz"
    np.savez(extra, X=x[:150], y=y[:150])
    net = Testnet(plan)
    net.start()
    try:
        wait_for("node 0's RPC", lambda: try_call(plan.rpc_ports[0], lambda c: c.block_number(chain)) is not None,
                 START_DELAY + T_P_TUPLE)
        added = subprocess.run(
            [sys.executable, "-m", "daimon_node.cli", "problem", "add-tuple", "--problem", str(plan.problem_dir),
             "--data", str(extra), "--key-dir", str(plan.directory / "node0"), "--del-n", "64",
             "--rpc", f"http://127.0.0.1:{plan.rpc_ports[0]}", "--json"],
            capture_output=True, text=True, timeout=T_P_TUPLE)
        assert added.returncode == 0, added.stderr
        port = plan.rpc_ports[1]  # the other node: it got the tuple and its DEL over the network

        def shown() -> dict[str, Any]:
            return try_call(port, lambda c: c.get_problem(chain)) or {}

        wait_for("the Problem block with both tuples", lambda: len(shown().get("extra_tuples", [])) == 1,
                 START_DELAY + T_P_TUPLE + 2 * T_B)
        # bond, register, anchor, settle: four periods, plus one for a block committed after the grace
        wait_for("an improvement settled on both tuples",
                 lambda: (d_c := shown().get("d_c_ppb", [])) and len(d_c) == 2 and all(d < 10**9 for d in d_c), 8 * T_B)
    finally:
        net.stop()
    replay = replay_chain(plan.directory / "node1", plan.chain_id)
    assert len(replay.blocks[0].body.extra_tuples) == 1
    settled = [r.settlement for r in replay.receipts if r.settlement is not None and r.settlement.outcome == "settled"]
    assert settled and len(settled[0].distances) == 2
