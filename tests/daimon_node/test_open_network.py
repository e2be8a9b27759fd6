"""An open network outlives its first nodes (issue 17): 6 node processes on 127.0.0.1.

Nodes 0-2 are the genesis committers of a bonded problem (delay D = 1 period, miss limit
L = 2). Node 0 created the problem and node 1 commits with it; both stop for good after a few
blocks. Nodes 0 and 1 do not validate, so the bonded validators (nodes 2-4, and node 5 once it
bonds) keep the whole voting weight after they leave. Node 5 then starts with no proposal in its
data directory and one bootstrap address (node 3's). It must:

- learn the problem from that peer, check that the proposal hashes to the chain id, sync to the
  network's head and fetch the problem's content;
- register as a committer (`daimon-node committer register`) and take its turns;
- improve: its model is proved, anchored, revealed, voted and settled after the creator left.

Meanwhile the silent genesis committers drop out of the rotation after L missed turns, and at
the end every running node is on one head.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any, Callable

import pytest
import tomli_w

from chain.crypto import KeyPair
from daimon_node.harness.testnet import Testnet, TestnetPlan, log_tail, prepare_testnet
from daimon_node.proofs.problem_kit import load_problem
from netutil import free_base_port, try_call, wait_for
from p2p import peer_id_from_seed
from test_committer_testnet import TransferPump, blocks_from

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

NODES = 6
T_P, T_B, GRACE = 8, 4, 2
DELAY, MISS_LIMIT = 1, 2
BOND = 10**18
BOOT = 60  # seconds for the first node processes to start and agree on the Problem block under load
BLOCKS_BEFORE_STOP = 3
LEAVING = (0, 1)  # the creator and its fellow committer
JOINER = 5
ENTRY = 3  # the one node the joiner is told about


def cli(*args: str) -> Any:
    r = subprocess.run([sys.executable, "-m", "daimon_node.cli", *args, "--json"], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, f"{args}: rc {r.returncode}\n{r.stdout}\n{r.stderr}"
    return json.loads(r.stdout)


def configure(plan: TestnetPlan) -> None:
    """Roles for the story: node 3 improves with the weak example model from the start, node 5
    with the better linear one once it has joined; nodes 0 and 1 neither validate nor improve."""
    entry_addr = f"/ip4/127.0.0.1/tcp/{plan.p2p_ports[ENTRY]}/p2p/{peer_id_from_seed(plan.keys[ENTRY].seed)}"
    for i in range(NODES):
        path = plan.directory / f"node{i}.toml"
        cfg = tomllib.loads(path.read_text())
        roles = cfg["roles"]
        roles["committer"]["enabled"] = i in (0, 1, 2, JOINER)
        roles["validator"]["enabled"] = i not in LEAVING
        models = {ENTRY: [str(plan.models["weak"])], JOINER: [str(plan.models["linear"])]}.get(i, [])
        roles["improver"].update(enabled=bool(models), models=models)
        if i == JOINER:
            cfg["p2p"]["bootstrap"] = [entry_addr]
        path.write_text(tomli_w.dumps(cfg))
    for proposal in (plan.directory / f"node{JOINER}" / "proposals").glob("*.bin"):
        proposal.unlink()


def watched(net: Testnet, predicate: Callable[[], Any]) -> Callable[[], Any]:
    def check_then() -> Any:
        net.check()
        return predicate()

    return check_then


def head_of(port: int, chain: str) -> dict[str, Any] | None:
    return try_call(port, lambda c: c.get_block_by_number(chain, c.block_number(chain)))


def test_the_network_outlives_its_creator_and_a_joiner_takes_turns(tmp_path: Path) -> None:
    sender = KeyPair.from_label("open-network-sender")
    plan = prepare_testnet(tmp_path / "net", NODES, t_p=T_P, t_b=T_B, grace=GRACE, base_port=free_base_port(NODES),
                           start_delay=10, extra_accounts=(sender.address_bytes,), committer_bond=BOND,
                           committer_delay=DELAY, committer_miss_limit=MISS_LIMIT)
    configure(plan)
    problem = load_problem(plan.problem_dir)
    chain = "0x" + plan.chain_id.hex()
    ports = plan.rpc_ports
    joiner = plan.keys[JOINER]
    net = Testnet(plan)
    for i in range(NODES - 1):
        net.start_node(i)
    pump = TransferPump(ports[ENTRY], plan.chain_id, sender, plan.keys[4].address_bytes, problem.params.min_fee)
    pump.thread.start()
    try:
        wait_for(f"height {BLOCKS_BEFORE_STOP}", watched(net, lambda: (try_call(ports[ENTRY], lambda c: c.block_number(
            chain)) or -1) >= BLOCKS_BEFORE_STOP), BOOT + T_P + (BLOCKS_BEFORE_STOP + 2) * T_B)
        for i in LEAVING:
            net.stop_node(i)  # for good: the creator never announces the problem again

        net.start_node(JOINER)
        # Start-up, one discovery tick, the list/get request, then sync and content over the same
        # peer: a period or two; allowed 4 periods and the start-up for the load.
        try:
            wait_for("node 5 to follow the problem", watched(net, lambda: next(
                (p.get("followed") for p in (try_call(ports[JOINER], lambda c: c.list_problems()) or [])
                 if p["chain"] == chain), False)), 4 * T_B + 20)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; node 5's log ends:\n{log_tail(net.log_path(JOINER), 30)}") from None
        assert (plan.directory / f"node{JOINER}" / "proposals" / f"{plan.chain_id.hex()}.bin").read_bytes() == \
            plan.problem_dir.joinpath("proposal.bin").read_bytes()

        def synced() -> bool:
            heads = [head_of(p, chain) for p in (ports[ENTRY], ports[JOINER])]
            return all(h is not None for h in heads) and heads[0]["hash"] == heads[1]["hash"]

        wait_for("node 5 on the network's head", watched(net, synced), 4 * T_B)
        for cid in (problem.proposal.first_tuple.z_id, problem.proposal.first_tuple.del_id):
            wait_for("node 5 to hold the problem's content",
                     lambda cid=cid: try_call(ports[JOINER], lambda c: c.get_content("0x" + cid.hex())), 2 * T_B)

        rpc5 = f"http://127.0.0.1:{ports[JOINER]}"
        sent = cli("committer", "register", "--key-dir", str(plan.directory / f"node{JOINER}"), "--rpc", rpc5,
                   "--wait")
        joins = sent["joins_period"]
        assert joins == sent["included"]["period"] + DELAY

        def joiner_committed() -> bool:
            return any(b["committer"] == "0x" + joiner.public_key.hex() and b["period"] >= joins
                       for b in blocks_from(ports[ENTRY], chain, sent["included"]["height"]))

        # Its first turn comes within N = 4 periods of joining (3 genesis members and itself), one
        # more for gossip; the two silent members' turns are filled out of turn after the grace.
        wait_for("a block committed by node 5", watched(net, joiner_committed), (DELAY + 4 + 1) * T_B + GRACE + 20)

        def removed(key: KeyPair) -> bool:
            view = cli("committer", "status", "--rpc", rpc5)
            rec = next((r for r in view["records"] if r["committer"] == "0x" + key.public_key.hex()), None)
            return rec is not None and rec["status"] == "removed for misses"

        # L missed turns each, one turn every N <= 4 periods, plus the delay and gossip.
        wait_for("the silent committers' removal", watched(net, lambda: all(removed(plan.keys[i]) for i in LEAVING)),
                 (MISS_LIMIT + 1) * 4 * T_B + DELAY * T_B + 30)

        # The joiner's own model: proved, anchored, revealed, voted and settled after the creator left.
        wait_for("node 5's improvement settled", watched(net, lambda: (try_call(ports[ENTRY], lambda c: c.best_model(
            chain)) or {}).get("prover") == "0x" + joiner.address), 12 * T_B + 30)

        running = [i for i in range(NODES) if i not in LEAVING]

        def one_head() -> bool:
            heads = {(head_of(ports[i], chain) or {}).get("hash") for i in running}
            return len(heads) == 1 and None not in heads

        wait_for("every running node on one head", watched(net, one_head), 2 * T_B)
    finally:
        pump.stop.set()
        net.stop()
