"""End to end: 4 node processes on 127.0.0.1 run the whole protocol (issue 7).

Problem -> T_p -> Problem block -> register -> PoI + votes anchored -> reveal
settled, twice, with real ONNX models; every node agrees on the head; the
rewards equal the formula; a node killed with SIGKILL restarts and catches up;
with the in-turn committer stopped, out-of-turn commits keep the chain live.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from chain.builder import make_transaction
from chain.consensus import in_turn_committer
from chain.crypto import address_bytes
from chain.rewards import improvement_reward, validator_reward
from chain.payloads import Transfer
from daimon_node.proofs.problem_kit import load_problem
from daimon_node.daemon.replay import replay_chain
from daimon_node.harness.testnet import Testnet, prepare_testnet
from netutil import free_base_port, rpc, try_call, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

T_P, T_B, GRACE = 10, 6, 3


def heads(ports: list[int], chain: str) -> list[Any]:
    return [try_call(p, lambda c: c.get_block_by_number(chain, c.block_number(chain))) for p in ports]


def agree(ports: list[int], chain: str, min_height: int = 0) -> bool:
    hs = heads(ports, chain)
    return all(h is not None for h in hs) and len({h["hash"] for h in hs}) == 1 and hs[0]["height"] >= min_height


def configure_single_improver(directory: Path, models: dict[str, Path]) -> None:
    """Node 1 competes with a weak then a better model; nobody else improves."""
    for i in range(4):
        path = directory / f"node{i}.toml"
        cfg = tomllib.loads(path.read_text())
        improver = cfg["roles"]["improver"]
        if i == 1:
            improver.update(enabled=True, models=[str(models["weak"]), str(models["linear"])])
        else:
            improver.update(enabled=False, models=[])
        path.write_text(tomli_w.dumps(cfg))


def metric_value(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"metric {name} not exported")


def check_bad_input_is_refused_and_counted(port: int, chain: str) -> None:
    import urllib.request

    from daimon_node.rpc.errors import Rejected

    def metrics() -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
            return reply.read().decode()

    before = metric_value(metrics(), "daimon_rpc_rejected")
    with rpc(port) as client:
        for send in (client.send_raw_transaction, client.submit_proof, client.submit_reveal):
            with pytest.raises(Rejected, match="malformed"):
                send(chain, "0x" + b"\x93\x01\x02".hex())  # a msgpack array, not a signed object
        height = client.block_number(chain)
    assert metric_value(metrics(), "daimon_rpc_rejected") >= before + 3
    req = urllib.request.Request(f"http://127.0.0.1:{port}/", data=b"{not json", method="POST")
    with urllib.request.urlopen(req, timeout=5) as reply:
        assert b"-32700" in reply.read()
    with rpc(port) as client:
        assert client.block_number(chain) >= height  # still serving


def test_four_node_testnet_runs_the_protocol(tmp_path: Path) -> None:
    base = free_base_port(4)
    plan = prepare_testnet(tmp_path / "net", 4, t_p=T_P, t_b=T_B, grace=GRACE, base_port=base, start_delay=8)
    configure_single_improver(plan.directory, plan.models)
    chain = "0x" + plan.chain_id.hex()
    ports = plan.rpc_ports
    net = Testnet(plan)
    net.start()
    try:
        # Phase 1: two improvements settle on every node.
        def settled_twice() -> bool:
            best = try_call(ports[0], lambda c: c.best_model(chain))
            return best is not None and best["distance_ppb"] < 100_000_000 and agree(ports, chain)

        wait_for("the Problem block on every node", lambda: agree(ports, chain, 0), 90)
        wait_for("two settled improvements, agreed by all nodes", settled_twice, 240)
        height_before = try_call(ports[0], lambda c: c.block_number(chain))
        balances_before = {
            i: try_call(ports[0], lambda c, k=k: c.get_balance(chain, "0x" + k.address)) for i, k in enumerate(plan.keys)
        }
        height_after = try_call(ports[0], lambda c: c.block_number(chain))  # the balances are of one of these heads

        # Phase 2: SIGKILL a node, keep the chain moving, restart it: it catches up.
        net.stop_node(3, kill=True)
        sender = plan.keys[0]
        nonce = try_call(ports[0], lambda c: c.get_nonce(chain, "0x" + sender.address))
        submit_port = ports[2]  # a node that stays up in every phase
        min_fee = load_problem(plan.problem_dir).params.min_fee  # every tx pays at least this

        def send_transfer(amount: int) -> None:
            """Gives the committers something to do, so periods are not skipped."""
            nonlocal nonce
            tx = make_transaction(sender, plan.chain_id, nonce, Transfer(plan.keys[3].address_bytes, amount), min_fee)
            if try_call(submit_port, lambda c: c.send_raw_transaction(chain, "0x" + tx.encode().hex())) is not None:
                nonce += 1

        height_at_kill = try_call(ports[0], lambda c: c.block_number(chain))
        send_transfer(1)
        wait_for("a new block while node 3 is down",
                 lambda: (try_call(ports[0], lambda c: c.block_number(chain)) or 0) > height_at_kill, 60)
        net.start_node(3)
        wait_for("node 3 to catch up after SIGKILL", lambda: agree(ports, chain), 90)

        # Phase 3: stop committer 0; blocks in its turns come out of turn from the others.
        problem = load_problem(plan.problem_dir)

        def committer_in_turn(period: int) -> bytes:
            return in_turn_committer(problem.params, period)

        net.stop_node(0)
        live = ports[1:]
        height_at_stop = try_call(live[0], lambda c: c.block_number(chain))

        def out_of_turn_block_seen() -> bool:
            send_transfer(2)
            h = try_call(live[0], lambda c: c.block_number(chain)) or 0
            for n in range(height_at_stop + 1, h + 1):
                block = try_call(live[0], lambda c, n=n: c.get_block_by_number(chain, n))
                if block and block["committer"] != "0x" + committer_in_turn(block["period"]).hex():
                    return True
            return False

        wait_for("an out-of-turn block with committer 0 stopped", out_of_turn_block_seen, 120, poll=2.0)
        wait_for("the remaining nodes to agree", lambda: agree(live, chain), 60)

        # Bad input over RPC: refused with a reason, counted in /metrics, the node keeps serving.
        check_bad_input_is_refused_and_counted(live[0], chain)
    finally:
        net.stop()

    # Rewards: replay node 1's chain and check every payment against the formula.
    replay = replay_chain(plan.directory / "node1", plan.chain_id)
    receipts = replay.receipts
    params = problem.params
    d_c = [10**9]
    paid: dict[bytes, int] = {}
    settled = [r.settlement for r in receipts if r.settlement is not None and r.settlement.outcome == "settled"]
    assert len(settled) >= 2, [r.settlement for r in receipts if r.settlement]
    for s in settled:
        expected = improvement_reward(s.distances[0], d_c[0], params.reward_a, params.reward_scale)
        assert s.improver_reward == expected
        assert [a for _, a in s.validator_rewards] == [validator_reward(expected, p) for p in range(1, len(s.validator_rewards) + 1)]
        d_c = list(s.distances)
        paid[s.improver] = paid.get(s.improver, 0) + s.improver_reward
        for addr, amount in s.validator_rewards:
            paid[addr] = paid.get(addr, 0) + amount
    # The improver's holdings before phase 2 = genesis + its rewards - the fees of its txs + the fees
    # of the blocks it committed, at the head the balances were read on (one of height_before..after).
    improver = plan.keys[1]
    bal = balances_before[1]
    assert bal is not None and height_before is not None and height_after is not None
    genesis = 1000 * 10**18

    def fee_flow(height: int) -> int:
        blocks = list(zip(replay.blocks[1:height + 1], receipts[1:height + 1]))
        got = sum(r.fees for b, r in blocks if b.header.committer == improver.public_key)
        spent = sum(tx.fee for b, _ in blocks for tx in b.body.transactions if tx.sender == improver.public_key)
        return got - spent

    def paid_until(height: int) -> int:
        """What the settlements of blocks 1..height paid the improver's key (later ones came after the read)."""
        total = 0
        for r in receipts[1:height + 1]:
            s = r.settlement
            if s is not None and s.outcome == "settled":
                total += s.improver_reward if s.improver == improver.address_bytes else 0
                total += sum(amount for addr, amount in s.validator_rewards if addr == improver.address_bytes)
        return total

    expected = {genesis + paid_until(h) + fee_flow(h) for h in range(height_before, height_after + 1)}
    assert int(bal["spendable"]) + int(bal["locked"]) in expected
    assert int(bal["locked"]) == params.validator_bond
    assert address_bytes(improver.public_key) in paid
