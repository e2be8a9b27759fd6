"""A DHT-only start (issue 17): 8 node processes, each given one bootstrap address, its predecessor's.

Without discovery such a line keeps one or two peers per node, and a block crosses up to seven
hops. With the Kademlia DHT (the default) every node must end with at least 3 gossip peers on
the chain's blocks topic, and every node must hold every block the committers make: the same
canonical hash at every height.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from chain.crypto import KeyPair
from daimon_node.harness.testnet import Testnet, log_tail, prepare_testnet
from daimon_node.proofs.problem_kit import load_problem
from netutil import free_base_port, try_call, wait_for
from test_committer_testnet import TransferPump

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

NODES = 8
T_P, T_B, GRACE = 8, 4, 2
BOOT = 90  # seconds for 8 node processes to start on a loaded 2-core machine
BLOCKS = 4  # competition blocks every node must hold
MIN_GOSSIP_PEERS = 3


def only_committers_and_validators(directory: Path) -> None:
    """Nobody improves: the blocks carry a test key's transfers, and 8 processes stay light."""
    for i in range(NODES):
        path = directory / f"node{i}.toml"
        cfg = tomllib.loads(path.read_text())
        cfg["roles"]["improver"].update(enabled=False, models=[])
        assert len(cfg["p2p"]["bootstrap"]) == (1 if i else 0)
        path.write_text(tomli_w.dumps(cfg))


def info(port: int) -> dict[str, Any] | None:
    return try_call(port, lambda c: c.node_info())


def test_a_line_of_eight_meshes_through_the_dht(tmp_path: Path) -> None:
    sender = KeyPair.from_label("discovery-line-sender")
    plan = prepare_testnet(tmp_path / "net", NODES, t_p=T_P, t_b=T_B, grace=GRACE, base_port=free_base_port(NODES),
                           start_delay=20, extra_accounts=(sender.address_bytes,), bootstrap_peers=1)
    only_committers_and_validators(plan.directory)
    problem = load_problem(plan.problem_dir)
    chain = "0x" + plan.chain_id.hex()
    ports = plan.rpc_ports
    net = Testnet(plan)
    net.start()
    pump = TransferPump(ports[0], plan.chain_id, sender, plan.keys[1].address_bytes, problem.params.min_fee)
    pump.thread.start()
    try:
        def gossip_peers() -> list[int]:
            net.check()
            views = [info(p) for p in ports]
            return [next((c["gossip_peers"] for c in (v or {}).get("chains", []) if c["chain"] == chain), 0)
                    for v in views]

        try:
            wait_for(f"{MIN_GOSSIP_PEERS}+ gossip peers on every node",
                     lambda: min(gossip_peers()) >= MIN_GOSSIP_PEERS, BOOT + T_P)
        except AssertionError as exc:
            raise AssertionError(f"{exc}: {gossip_peers()}; node 7's log ends:\n"
                                 f"{log_tail(net.log_path(NODES - 1), 20)}") from None

        def heights() -> list[int]:
            net.check()
            return [try_call(p, lambda c: c.block_number(chain)) or -1 for p in ports]

        # The Problem block, then BLOCKS competition blocks; a period each, and two more for gossip.
        wait_for(f"height {BLOCKS + 1} on every node", lambda: min(heights()) >= BLOCKS + 1,
                 T_P + (BLOCKS + 3) * T_B + 30)
        top = min(heights())
        for n in range(top + 1):
            hashes = {try_call(p, lambda c, n=n: (c.get_block_by_number(chain, n) or {}).get("hash")) for p in ports}
            assert len(hashes) == 1 and None not in hashes, f"height {n}: {hashes}"
        peers = gossip_peers()
        assert min(peers) >= MIN_GOSSIP_PEERS, peers
        discovery = [(info(p) or {}).get("discovery", {}) for p in ports]
        assert all(d.get("dht") and d.get("routing_table", 0) >= MIN_GOSSIP_PEERS for d in discovery), discovery
    finally:
        pump.stop.set()
        net.stop()
