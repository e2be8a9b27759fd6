"""A problem outlives its creator (issue 17): 3 node processes on 127.0.0.1.

The creator (node 0) and a follower (node 1) run a few blocks; the creator stops for
good; a fresh node (node 2), whose data directory holds no proposal and whose only
bootstrap address is the follower's, learns the problem from the follower over
``/daimon/problems/1``, checks that the proposal hashes to the chain id, syncs to the
follower's head and fetches the problem's content (test inputs, DEL) from the follower,
the only peer it has. Gossip cannot have told it: only the creator announces a problem.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any, Callable

import pytest
import tomli_w

from chain.builder import make_transaction
from chain.crypto import KeyPair
from chain.payloads import Transfer
from daimon_node.proofs.problem_kit import load_problem
from daimon_node.harness.testnet import Testnet, log_tail, prepare_testnet
from netutil import free_base_port, try_call, wait_for
from p2p import peer_id_from_seed

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

T_P, T_B, GRACE = 10, 6, 3  # the e2e test's periods: short, and long enough for a loaded box
START_DELAY = 6  # t0 after the plan is written: time for two node processes to start
BLOCKS_BEFORE_STOP = 2  # the Problem block and two blocks of transfers


def configure(directory: Path, follower_addr: str) -> None:
    """No improvers (the test's transfers make the blocks); node 2 only follows, dials only
    the follower, and starts without the proposal that ``prepare_testnet`` gives every node."""
    for i in range(3):
        path = directory / f"node{i}.toml"
        cfg = tomllib.loads(path.read_text())
        cfg["roles"]["improver"].update(enabled=False, models=[])
        if i == 2:
            cfg["roles"]["committer"]["enabled"] = False
            cfg["p2p"]["bootstrap"] = [follower_addr]
        path.write_text(tomli_w.dumps(cfg))
    for proposal in (directory / "node2" / "proposals").glob("*.bin"):
        proposal.unlink()


def listed(port: int, chain: str) -> dict[str, Any] | None:
    problems = try_call(port, lambda c: c.list_problems()) or []
    return next((p for p in problems if p["chain"] == chain), None)


def watched(net: Testnet, predicate: Callable[[], Any]) -> Callable[[], Any]:
    """``predicate``, after checking that no node died (``NodeDied`` carries its last log lines)."""

    def check_then() -> Any:
        net.check()
        return predicate()

    return check_then


def test_late_joiner_learns_the_problem_from_a_follower(tmp_path: Path) -> None:
    base = free_base_port(3)
    sender = KeyPair.from_label("problem-outlives-creator-sender")
    plan = prepare_testnet(tmp_path / "net", 3, t_p=T_P, t_b=T_B, grace=GRACE, base_port=base,
                           start_delay=START_DELAY, extra_accounts=(sender.address_bytes,))
    chain = "0x" + plan.chain_id.hex()
    peer_ids = [peer_id_from_seed(k.seed) for k in plan.keys]
    follower_addr = f"/ip4/127.0.0.1/tcp/{plan.p2p_ports[1]}/p2p/{peer_ids[1]}"
    configure(plan.directory, follower_addr)
    problem = load_problem(plan.problem_dir)
    _, follower_port, joiner_port = plan.rpc_ports
    nonce = 0

    def feed_and_height(port: int, at_least: int) -> bool:
        """Send one transfer through the follower (so the period is not skipped); True once the
        node at ``port`` is at ``at_least``."""
        nonlocal nonce
        tx = make_transaction(sender, plan.chain_id, nonce, Transfer(plan.keys[2].address_bytes, 1 + nonce),
                              problem.params.min_fee)
        if try_call(follower_port, lambda c: c.send_raw_transaction(chain, "0x" + tx.encode().hex())) is not None:
            nonce += 1
        return (try_call(port, lambda c: c.block_number(chain)) or -1) >= at_least

    net = Testnet(plan)
    try:
        net.start_node(0)
        net.start_node(1)
        # The Problem block comes at t0 + T_P, then one block per period that has a transfer:
        # START_DELAY + T_P + (BLOCKS_BEFORE_STOP + 1) * T_B = 34 s, twice that for the load.
        bound = 2 * (START_DELAY + T_P + (BLOCKS_BEFORE_STOP + 1) * T_B)
        wait_for(f"height {BLOCKS_BEFORE_STOP} on the follower",
                 watched(net, lambda: feed_and_height(follower_port, BLOCKS_BEFORE_STOP)), bound, poll=T_B / 3)
        net.stop_node(0)  # the creator leaves for good; only it ever announced the problem
        assert not list((plan.directory / "node2" / "proposals").glob("*.bin"))

        net.start_node(2)
        # Start-up (~5 s: imports, key, store), one discovery tick (1 s), one list and one get
        # request, then sync and content over the same connection: well inside a period or two;
        # allowed 4 periods for the load.
        try:
            wait_for("node 2 to follow the problem",
                     watched(net, lambda: (listed(joiner_port, chain) or {}).get("followed")), 4 * T_B + 10)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; node 2's log ends:\n{log_tail(net.log_path(2), 30)}") from None
        assert (plan.directory / "node2" / "proposals" / f"{plan.chain_id.hex()}.bin").read_bytes() == \
            plan.problem_dir.joinpath("proposal.bin").read_bytes()

        def synced() -> bool:
            heads = [try_call(p, lambda c: c.get_block_by_number(chain, c.block_number(chain)))
                     for p in (follower_port, joiner_port)]
            return all(h is not None for h in heads) and heads[0]["hash"] == heads[1]["hash"]

        wait_for("node 2 on the follower's head", watched(net, synced), 4 * T_B)
        assert try_call(joiner_port, lambda c: c.block_number(chain)) >= BLOCKS_BEFORE_STOP

        proposal = problem.proposal
        for name, cid in (("test inputs", proposal.first_tuple.z_id), ("DEL", proposal.first_tuple.del_id)):
            data = wait_for(f"node 2 to hold the {name}",
                            lambda cid=cid: try_call(joiner_port, lambda c: c.get_content("0x" + cid.hex())), 2 * T_B)
            assert hashlib.sha256(data).digest() == cid  # (the client checks it too)

        # What node 2 shows: the follower holds the chain at its height; the creator, never met, is not listed.
        row = wait_for("the follower listed as a holder on node 2",
                       lambda: (lambda r: r if r and r["holders"] else None)(listed(joiner_port, chain)), 2 * T_B)
        holders = {h["peer_id"]: h["height"] for h in row["holders"]}
        assert set(holders) == {peer_ids[1]} and holders[peer_ids[1]] >= BLOCKS_BEFORE_STOP
        shown = subprocess.run([sys.executable, "-m", "daimon_node.cli", "problem", "list", "--network",
                                "--rpc", f"http://127.0.0.1:{joiner_port}"], capture_output=True, text=True, timeout=60)
        assert shown.returncode == 0, shown.stderr
        assert plan.chain_id.hex() in shown.stdout and peer_ids[1] in shown.stdout and peer_ids[0] not in shown.stdout
        net.check()
    finally:
        net.stop()
