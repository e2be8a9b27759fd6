"""A standard libp2p peer can follow a DaiMoN chain (issue 17): js-libp2p against a real node.

``interop/js/follow.mjs`` (js-libp2p 2.10: TCP, Noise, Yamux, identify, GossipSub with strict
signing and the SHA-256 message id) dials one node process, subscribes to the chain's blocks
topic, then syncs the chain from genesis over ``/daimon/sync/1`` and checks the hash chain,
every body hash and committer signature, all in JavaScript from docs/wire.md. The test checks
what the follower says against the node's own JSON-RPC: every block the node made while the
follower was subscribed came over gossip, with the node's hashes, and the synced head is the
node's block at that height.

Skips (with the reason) where Node.js 20+ or npm is missing or ``npm ci`` cannot install the
pinned packages (no registry).
"""

from __future__ import annotations

import json
import queue
import subprocess
import threading
import time
import tomllib
from pathlib import Path
from typing import Any

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

T_P, T_B, GRACE = 8, 4, 2  # short periods; one node, no votes: a block needs only a committer's turn
START_DELAY = 6  # t0 after the plan is written: time for one node process to start
GOSSIP_BLOCKS = 3  # blocks the follower waits for over gossip before it syncs
HEARTBEAT_S = 1.0  # the node's GossipSub heartbeat (p2p.P2PConfig.heartbeat_interval_s)
# Node 0 is the only node up: it commits its own turns at a period's end and node 1's after the
# grace time, so with a transfer in every period a block comes at least every T_B + GRACE.
FOLLOW_TIMEOUT_S = 2 * (START_DELAY + T_P + (GOSSIP_BLOCKS + 1) * (T_B + GRACE))  # doubled for load
SETTLE_S = T_B  # how long the follower waits for a synced block's gossip copy: within one period


def only_transfers(directory: Path) -> None:
    """No improvers: the test's transfers make the blocks."""
    for path in directory.glob("node*.toml"):
        cfg = tomllib.loads(path.read_text())
        cfg["roles"]["improver"].update(enabled=False, models=[])
        path.write_text(tomli_w.dumps(cfg))


class Lines:
    """The lines of a pipe, read by a thread, so the test can wait on them with a bound."""

    def __init__(self, pipe: Any) -> None:
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._pump, args=(pipe,), daemon=True).start()

    def _pump(self, pipe: Any) -> None:
        for line in pipe:
            self.lines.put(line)

    def wait_event(self, event: str, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {event!r} from the follower in {timeout:.0f} s; it said:\n"
                                     + "".join(self.seen[-20:]))
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                continue
            self.seen.append(line)
            record = json.loads(line) if line.startswith("{") else {}
            if record.get("event") == event:
                return record


def test_js_libp2p_follower_gets_every_block_and_the_chain(tmp_path: Path, node_js: str, js_dir: Path) -> None:
    node = node_js
    base = free_base_port(2)
    sender = KeyPair.from_label("js-follower-sender")
    plan = prepare_testnet(tmp_path / "net", 2, t_p=T_P, t_b=T_B, grace=GRACE, base_port=base,
                           start_delay=START_DELAY, extra_accounts=(sender.address_bytes,))
    only_transfers(plan.directory)
    chain = "0x" + plan.chain_id.hex()
    port = plan.rpc_ports[0]
    min_fee = load_problem(plan.problem_dir).params.min_fee
    address = f"/ip4/127.0.0.1/tcp/{plan.p2p_ports[0]}/p2p/{peer_id_from_seed(plan.keys[0].seed)}"
    net = Testnet(plan)
    follower: subprocess.Popen[str] | None = None
    nonce = 0

    def feed() -> None:
        """One transfer, so that the period has something to commit."""
        nonlocal nonce
        # A transfer whose RPC reply was lost still lands: the chain's nonce then moves past ours.
        nonce = max(nonce, try_call(port, lambda c: c.get_nonce(chain, "0x" + sender.address)) or 0)
        tx = make_transaction(sender, plan.chain_id, nonce, Transfer(plan.keys[1].address_bytes, 1 + nonce), min_fee)
        if try_call(port, lambda c: c.send_raw_transaction(chain, "0x" + tx.encode().hex())) is not None:
            nonce += 1

    def height() -> int:
        """The node's head height; -1 before the Problem block."""
        h = try_call(port, lambda c: c.block_number(chain))
        return -1 if h is None else int(h)

    try:
        net.start_node(0)  # alone: it commits every period itself, so it has no rival block
        wait_for("node 0's RPC", lambda: try_call(port, lambda c: c.node_info()), 60, poll=0.5)
        follower = subprocess.Popen(
            [node, str(js_dir / "follow.mjs"), "--peer", address, "--chain", plan.chain_id.hex(),
             "--blocks", str(GOSSIP_BLOCKS), "--timeout", str(FOLLOW_TIMEOUT_S), "--settle", str(SETTLE_S)],
            cwd=js_dir, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        events = Lines(follower.stderr)
        events.wait_event("subscribed", 30)
        # The node adds the follower to its mesh when our GRAFT arrives; one heartbeat covers it.
        time.sleep(HEARTBEAT_S)
        subscribed_at = height()

        deadline = time.monotonic() + FOLLOW_TIMEOUT_S + 10
        while follower.poll() is None and time.monotonic() < deadline:
            net.check()
            feed()
            time.sleep(T_B / 2)
        out, _ = follower.communicate(timeout=max(1.0, deadline - time.monotonic()))
        node_height = height()
        summary = json.loads(out.strip().splitlines()[-1])
        print("follower:", json.dumps({k: v for k, v in summary.items() if k != "gossip"}))
        assert follower.returncode == 0 and summary["ok"] and summary["verified"], \
            f"{summary}\n{''.join(events.seen[-20:])}\nnode log:\n{log_tail(net.log_path(0), 20)}"

        def node_hash(h: int) -> str:
            block = try_call(port, lambda c: c.get_block_by_number(chain, h))
            assert block is not None, f"node 0 has no block {h}"
            return str(block["hash"]).removeprefix("0x")

        gossip = {h: block_hash for h, block_hash in summary["gossip"]}
        sync_height = summary["sync_height"]
        # Every block the node made while the follower was subscribed, up to the head it synced.
        assert set(range(subscribed_at + 1, sync_height + 1)) <= set(gossip), (subscribed_at, sorted(gossip))
        assert len(gossip) >= GOSSIP_BLOCKS
        for h, block_hash in gossip.items():
            assert block_hash == node_hash(h), f"gossip block {h}"
        # The synced head is the node's block at that height; the node can only have moved on since.
        assert sync_height <= node_height
        assert summary["head_hash"] == node_hash(sync_height)
    finally:
        if follower is not None and follower.poll() is None:
            follower.kill()
            follower.wait(timeout=10)
        net.stop()
