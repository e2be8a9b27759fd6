"""Committers by transaction on a live network (issue 17): 4 node processes on 127.0.0.1.

Nodes 0-2 are the genesis committers of a bonded problem (delay D = 1 period, miss limit
L = 2); node 3 joins with ``daimon-node committer register`` and takes its turns. Then
node 2 stops for good: its slots are filled out of turn after the grace, after L misses in
a row it is removed (half its bond burned, shown by ``committer status``), and from the
period its removal takes effect every period's block is committed in turn, at the period's
end, by the remaining set. A transfer every second gives the committers something to do,
so no period is skipped for lack of work.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import tomllib
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from chain.builder import make_transaction
from chain.consensus import in_turn_committer
from chain.crypto import KeyPair
from chain.payloads import Transfer
from daimon_node.proofs.problem_kit import load_problem
from daimon_node.harness.testnet import Testnet, prepare_testnet
from netutil import free_base_port, try_call, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

T_P, T_B, GRACE = 8, 4, 2
DELAY, MISS_LIMIT = 1, 2
BOND = 10**18
BOOT = 60  # seconds for 4 node processes to start and agree on the Problem block under load


def cli(*args: str) -> Any:
    r = subprocess.run([sys.executable, "-m", "daimon_node.cli", *args, "--json"], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, f"{args}: rc {r.returncode}\n{r.stdout}\n{r.stderr}"
    return json.loads(r.stdout)


def enable_only_committing(directory: Path) -> None:
    """Every node commits (node 3 once registered); nobody improves, so blocks carry transfers only."""
    for i in range(4):
        path = directory / f"node{i}.toml"
        cfg = tomllib.loads(path.read_text())
        cfg["roles"]["committer"]["enabled"] = True
        cfg["roles"]["improver"].update(enabled=False, models=[])
        path.write_text(tomli_w.dumps(cfg))


class TransferPump:
    """A transfer a second from a funded test key (its nonces shared with no node role)."""

    def __init__(self, port: int, chain_id: bytes, sender: KeyPair, to: bytes, fee: int) -> None:
        self.port, self.chain_id, self.sender, self.to, self.fee = port, chain_id, sender, to, fee
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        chain = "0x" + self.chain_id.hex()
        while not self.stop.wait(1.0):
            nonce = try_call(self.port, lambda c: c.get_nonce(chain, "0x" + self.sender.address))
            if nonce is None:
                continue
            tx = make_transaction(self.sender, self.chain_id, nonce, Transfer(self.to, 1), self.fee)
            try_call(self.port, lambda c: c.send_raw_transaction(chain, "0x" + tx.encode().hex()))


def blocks_from(port: int, chain: str, start: int) -> list[dict[str, Any]]:
    height = try_call(port, lambda c: c.block_number(chain)) or 0
    out = []
    for n in range(start, height + 1):
        block = try_call(port, lambda c, n=n: c.get_block_by_number(chain, n))
        if block is not None:
            out.append(block)
    return out


def test_committer_joins_and_a_silent_one_leaves_the_rotation(tmp_path: Path) -> None:
    sender = KeyPair.from_label("committer-testnet-sender")
    plan = prepare_testnet(tmp_path / "net", 4, t_p=T_P, t_b=T_B, grace=GRACE, base_port=free_base_port(4),
                           start_delay=8, extra_accounts=(sender.address_bytes,), committer_bond=BOND,
                           committer_delay=DELAY, committer_miss_limit=MISS_LIMIT)
    enable_only_committing(plan.directory)
    params = load_problem(plan.problem_dir).params
    chain = "0x" + plan.chain_id.hex()
    ports = plan.rpc_ports
    rpc0 = f"http://127.0.0.1:{ports[0]}"
    joiner, silent = plan.keys[3], plan.keys[2]
    net = Testnet(plan)
    net.start()
    pump = TransferPump(ports[0], plan.chain_id, sender, plan.keys[1].address_bytes, params.min_fee)
    pump.thread.start()
    try:
        wait_for("the Problem block", lambda: (try_call(ports[0], lambda c: c.block_number(chain)) or -1) > 0, BOOT)
        sent = cli("committer", "register", "--key-dir", str(plan.directory / "node3"), "--rpc", rpc0, "--wait")
        joins = sent["joins_period"]
        assert joins == sent["included"]["period"] + DELAY
        # its first turn comes within N = 4 periods of joining (plus one for gossip)
        n_after_join = 4

        def joiner_committed() -> bool:
            return any(b["committer"] == "0x" + joiner.public_key.hex() and b["period"] >= joins
                       for b in blocks_from(ports[0], chain, sent["included"]["height"]))

        wait_for("a block by the new committer", joiner_committed, (DELAY + n_after_join + 1) * T_B + GRACE + 10)

        # node 2 stops: L misses in a row need L of its turns, one every N periods
        net.stop_node(2)
        silent_hex = "0x" + silent.public_key.hex()

        def removed() -> dict[str, Any] | None:
            view = cli("committer", "status", "--rpc", rpc0)
            rec = next((r for r in view["records"] if r["committer"] == silent_hex), None)
            return rec if rec is not None and rec["status"] == "removed for misses" else None

        record = wait_for("the silent committer's removal", removed, (MISS_LIMIT + 1) * n_after_join * T_B + 30)
        assert int(record["bond"]) == 0  # a genesis member posts no bond: nothing to burn
        until = record["until"]
        rest = 3  # node 0, 1 and the joiner
        wait_for("2N periods after the removal took effect",
                 lambda: (try_call(ports[0], lambda c: c.get_block_by_number(chain, c.block_number(chain))) or
                          {"period": 0})["period"] >= until + 2 * rest, (DELAY + 2 * rest + 2) * T_B + 30)
        view = cli("committer", "status", "--rpc", rpc0)
        assert silent_hex not in view["in_force"] and "0x" + joiner.public_key.hex() in view["in_force"]
        members = [bytes.fromhex(k[2:]) for k in view["in_force"]]
        after = [b for b in blocks_from(ports[0], chain, 1) if until <= b["period"] < until + 2 * rest]
        # one block per period, each by its in-turn committer (an out-of-turn one would be another key,
        # signed after the grace): the pace is one block per T_b again
        assert [b["period"] for b in after] == list(range(until, until + 2 * rest))
        for b in after:
            assert b["committer"] == "0x" + in_turn_committer(params, b["period"], members).hex()
        height = after[-1]["height"]
        hashes = {(try_call(p, lambda c: c.get_block_by_number(chain, height)) or {}).get("hash") for p in
                  (ports[0], ports[1], ports[3])}
        assert len(hashes) == 1 and None not in hashes
    finally:
        pump.stop.set()
        net.stop()
