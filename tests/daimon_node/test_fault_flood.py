"""Fault: a hostile peer floods every gossip topic of a live 4-process testnet (issue 13).

The flooder (``flooder.py``, its own process) runs one identity per kind of junk
(random bytes, msgpack-shaped junk, one byte over the topic cap, unsigned, badly
signed, signed by a key that is not the author, an author no key can be derived
from, 256-message batches, frames that are not protobuf, frames over the RPC size
limit) against all four nodes, on all five topics the nodes use
(``/daimon/<chain>/{blocks,proofs,votes,txs}`` and ``/daimon/problems``), as fast
as the streams take it, for ``FLOOD_S`` seconds. Meanwhile the test submits honest
transfers to node 0 and follows every node's ``txs`` and ``newHeads`` over WebSocket.

Asserted: every identity is banned by every node and stays cut off (its verdict
counters stop at the ban); no node dies; blocks keep coming and reach every node,
each within the protocol's grace; honest transactions reach every node (latency p99
printed, bounded by one period); no honest transaction is lost; every node's RSS
stays under its pre-flood value plus what the p2p layer's caps allow (see
``rss_bound_bytes``).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import threading
import time
import tomllib
from pathlib import Path
from typing import Any

import psutil
import pytest
import tomli_w

from chain.builder import make_transaction
from chain.payloads import Transfer
from daimon_node.rpc.client import subscribe
from daimon_node.proofs.problem_kit import load_problem
from daimon_node.harness.testnet import Testnet, prepare_testnet
from netutil import free_base_port, try_call, wait_for
from p2p.gossip import MAX_RPC_BYTES, MAX_INFLIGHT_BYTES_PER_PEER, MAX_PENDING_BYTES_PER_TOPIC
from p2p.peers import PeerBook
from p2p.topics import CHAIN_TOPIC_KINDS, PROBLEMS_TOPIC, chain_topic

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

T_P, T_B, GRACE = 10, 6, 3
FLOOD_S = float(os.environ.get("DAIMON_FLOOD_S", "30"))  # the 30 s; shorter for a quick look
BASELINE_S = T_B  # one period of honest traffic before the flood, one after
TX_INTERVAL_S = 0.2  # honest transfers: 5/s, 30 per period, under the mempool's 64 per sender
BAN_S = PeerBook().ban_s  # the node's ban length (P2PConfig default)
FLOODER = Path(__file__).with_name("flooder.py")
YAMUX_MAX_WINDOW = 16 * 1024 * 1024  # libp2p.stream_muxer.yamux.yamux.MAX_WINDOW_SIZE (0.8.1)


def rss_bound_bytes(flooding_peers: int) -> int:
    """What a flood may add to a node's RSS while the caps of ``p2p.gossip`` hold.

    Per flooding connection: yamux buffers at most one receive window of the stream
    (libp2p's ceiling, 16 MiB); the RPC reader holds at most one RPC being assembled
    (``MAX_RPC_BYTES`` plus a read chunk, rounded to another ``MAX_RPC_BYTES``) and one
    parsed RPC (``MAX_RPC_BYTES``); messages of that peer waiting for judgement are
    capped at ``MAX_INFLIGHT_BYTES_PER_PEER``. Deferred messages are capped per topic
    at ``MAX_PENDING_BYTES_PER_TOPIC`` (five topics). Everything else the flood
    touches (caches of message ids, peer records) is bytes per message and bounded in
    count. Python keeps freed arenas, so the bound is on the peak, and holds after.
    """
    per_peer = YAMUX_MAX_WINDOW + 3 * MAX_RPC_BYTES + MAX_INFLIGHT_BYTES_PER_PEER
    pool = (len(CHAIN_TOPIC_KINDS) + 1) * MAX_PENDING_BYTES_PER_TOPIC
    return flooding_peers * per_peer + pool


def p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[98] if len(values) > 1 else values[0]


def configure_quiet_roles(directory: Path) -> None:
    """Nodes 0-2 commit, node 0 contributes; nobody improves or validates (no PoI work to
    compete with the flood for the CPU, and key 3 sends nothing but the test's transfers)."""
    for i in range(4):
        path = directory / f"node{i}.toml"
        cfg = tomllib.loads(path.read_text())
        cfg["roles"]["improver"].update(enabled=False, models=[])
        cfg["roles"]["validator"]["enabled"] = False
        path.write_text(tomli_w.dumps(cfg))


class Watcher:
    """WebSocket followers of one topic on every node: (arrival wall time, result) per node."""

    def __init__(self, ports: list[int], topic: str, chain: str) -> None:
        self.seen: list[list[tuple[float, Any]]] = [[] for _ in ports]
        self.threads = [threading.Thread(target=self._follow, args=(i, p, topic, chain), daemon=True)
                        for i, p in enumerate(ports)]
        for t in self.threads:
            t.start()

    def _follow(self, i: int, port: int, topic: str, chain: str) -> None:
        try:
            for result in subscribe(f"ws://127.0.0.1:{port}/ws", topic, chain, timeout=None):
                self.seen[i].append((time.time(), result))
        except Exception as exc:  # the node went away: recorded, asserted on later
            self.seen[i].append((time.time(), {"error": repr(exc)}))


class RssSampler:
    def __init__(self, pids: list[int]) -> None:
        self.procs = [psutil.Process(p) for p in pids]
        self.samples: list[tuple[float, list[int]]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.wait(0.25):
            try:
                self.samples.append((time.time(), [p.memory_info().rss for p in self.procs]))
            except psutil.Error:
                return

    def peak(self, i: int, start: float, end: float) -> int:
        return max(s[1][i] for s in self.samples if start <= s[0] <= end)


def test_flooder_is_banned_and_honest_gossip_flows(tmp_path: Path) -> None:
    base = free_base_port(4)
    plan = prepare_testnet(tmp_path / "net", 4, t_p=T_P, t_b=T_B, grace=GRACE, base_port=base, start_delay=8)
    configure_quiet_roles(plan.directory)
    chain = "0x" + plan.chain_id.hex()
    ports = plan.rpc_ports
    topics = [chain_topic(plan.chain_id, k) for k in CHAIN_TOPIC_KINDS] + [PROBLEMS_TOPIC]
    net = Testnet(plan)
    net.start()
    sender, payee = plan.keys[3], plan.keys[1]
    min_fee = load_problem(plan.problem_dir).params.min_fee  # every honest transfer pays the floor
    sent: dict[str, float] = {}  # tx hash -> wall time submitted
    stop_sending = threading.Event()
    try:
        wait_for("the Problem block on every node",
                 lambda: all(try_call(p, lambda c: c.block_number(chain)) is not None for p in ports), 90)
        heads = Watcher(ports, "newHeads", chain)
        txs = Watcher(ports, "txs", chain)
        rss = RssSampler([net.procs[i].pid for i in range(4)])
        def nonce_of_sender() -> tuple[int] | None:  # a tuple: nonce 0 is a valid answer
            n = try_call(ports[0], lambda c: c.get_nonce(chain, "0x" + sender.address))
            return None if n is None else (n,)

        (nonce,) = wait_for("the sender's nonce", nonce_of_sender, 30)

        def send_honest() -> None:
            nonlocal nonce
            while not stop_sending.wait(TX_INTERVAL_S):
                tx = make_transaction(sender, plan.chain_id, nonce, Transfer(payee.address_bytes, 1), min_fee)
                if try_call(ports[0], lambda c: c.send_raw_transaction(chain, "0x" + tx.encode().hex())):
                    sent["0x" + tx.hash.hex()] = time.time()
                    nonce += 1

        honest = threading.Thread(target=send_honest, daemon=True)
        honest.start()
        time.sleep(BASELINE_S)
        addrs = [(plan.directory / f"node{i}" / "p2p.addrs").read_text().split()[0] for i in range(4)]
        argv = [sys.executable, str(FLOODER), "--duration", str(FLOOD_S), "--identity-per-kind"]
        argv += [a for addr in addrs for a in ("--target", addr)] + [a for t in topics for a in ("--topic", t)]
        flood_start = time.time()
        flooder = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=open(tmp_path / "flooder.err", "wb"),
                                   env=dict(os.environ, PYTHONPATH=os.getcwd()))
        # Bounded: the flood's duration, plus the flooder's own start and its last dial (5 s).
        out, _ = flooder.communicate(timeout=FLOOD_S + 60)
        flood_end = time.time()
        report = json.loads(out.decode().splitlines()[-1])
        assert net.alive() == [0, 1, 2, 3], "a node died during the flood"

        # Banned by every node, and cut off: its counters stop at the ban.
        ids = {name: ident["peer_id"] for name, ident in report["identities"].items()}
        first: dict[int, dict[str, dict[str, Any]]] = {}
        for i, port in enumerate(ports):
            peers = {p["peer_id"]: p for p in try_call(port, lambda c: c.peers())}
            first[i] = peers
            for name, pid in ids.items():
                assert pid in peers and peers[pid]["banned_for_s"] > 0, (i, name, peers.get(pid))
        time.sleep(BASELINE_S)
        after_end = time.time()
        stop_sending.set()
        honest.join(timeout=10)
        ban_times: dict[str, list[float]] = {}
        for i, port in enumerate(ports):
            now = time.time()
            peers = {p["peer_id"]: p for p in try_call(port, lambda c: c.peers())}
            for name, pid in ids.items():
                p, p0 = peers[pid], first[i][pid]
                assert not p["connected"], (i, name, p)
                for counter in ("accepted", "rejected", "ignored", "deferred"):
                    assert p[counter] == p0[counter], (i, name, counter, p0, p)
                banned_at = now - (BAN_S - p["banned_for_s"])
                targets = report["identities"][name]["targets"]
                ban_times.setdefault(name, []).append(banned_at - (targets[i]["first_write_wall"] or banned_at))

        # Blocks kept coming during the flood and reached every node within the grace.
        wait_for("every node to agree on the head",
                 lambda: len({(h or {}).get("hash") for h in
                              (try_call(p, lambda c: c.get_block_by_number(chain, c.block_number(chain)))
                               for p in ports)}) == 1, 2 * T_B)
        arrivals: dict[str, list[float]] = {}
        for seen in heads.seen:
            for t, h in seen:
                assert "error" not in h, h
                if flood_start <= t <= flood_end:
                    arrivals.setdefault(h["hash"], []).append(t)
        # A block per period with transfers pending: at least FLOOD_S / T_B - 1 whole periods end inside.
        assert len(arrivals) >= int(FLOOD_S // T_B) - 1, arrivals
        block_delays = [max(ts) - min(ts) for ts in arrivals.values() if len(ts) == 4]
        assert len(block_delays) >= len(arrivals) - 1  # the last may still be on its way
        assert max(block_delays) < GRACE, block_delays  # later would invite out-of-turn blocks

        # Honest transactions: latency from node 0's admission to each other node's.
        admitted = [{r["hash"]: t for t, r in seen if "hash" in r} for seen in txs.seen]
        lat_flood, lat_base, missing = [], [], []
        for h, t0 in admitted[0].items():
            for i in (1, 2, 3):
                t = admitted[i].get(h)
                if t is None:
                    missing.append((i, h))
                elif flood_start <= t0 <= flood_end:
                    lat_flood.append(t - t0)
                elif t0 < flood_start:
                    lat_base.append(t - t0)
        # A tx a node saw first in a block (no event) is not lost: every sent tx is in the chain.
        final_nonce = try_call(ports[3], lambda c: c.get_nonce(chain, "0x" + sender.address))
        wait_for("every honest transfer to be included",
                 lambda: try_call(ports[3], lambda c: c.get_nonce(chain, "0x" + sender.address)) == nonce, 3 * T_B)
        # Honest gossip flowed through the whole flood: at least one transfer per node per period.
        assert len(lat_flood) >= 3 * int(FLOOD_S // T_B), (len(lat_flood), len(missing))
        flood_p99 = p99(lat_flood)
        assert flood_p99 < T_B, flood_p99  # a tx must be everywhere before the next block is built

        # Memory: peak RSS during and after the flood within the derived bound.
        bound = rss_bound_bytes(len(ids))
        rss_lines = []
        for i in range(4):
            pre = rss.peak(i, flood_start - BASELINE_S, flood_start)
            during = rss.peak(i, flood_start, flood_end)
            after = rss.peak(i, flood_end, after_end)
            rss_lines.append(f"node{i}: pre {pre / 2**20:.1f} MiB, flood peak {during / 2**20:.1f}, "
                             f"after {after / 2**20:.1f} (bound {(pre + bound) / 2**20:.1f})")
            assert during <= pre + bound and after <= pre + bound, rss_lines[-1]
        rss.stop.set()
        print(f"\nflood {FLOOD_S:.0f} s, {len(ids)} identities, load {os.getloadavg()}")
        for name, times in ban_times.items():
            sent_rpcs = sum(t["rpcs"] for t in report["identities"][name]["targets"])
            print(f"  {name:14s} banned by all 4 nodes; time to ban max {max(times):.3f} s; RPCs written {sent_rpcs}")
        print(f"honest tx latency: baseline n={len(lat_base)} p50 {statistics.median(lat_base) * 1e3:.1f} ms "
              f"p99 {p99(lat_base) * 1e3:.1f} ms; flood n={len(lat_flood)} p50 "
              f"{statistics.median(lat_flood) * 1e3:.1f} ms p99 {flood_p99 * 1e3:.1f} ms; "
              f"no event (seen in a block first) {len(missing)}; final nonce {final_nonce}")
        print(f"blocks during the flood {len(arrivals)}, spread to all 4 nodes max {max(block_delays) * 1e3:.0f} ms")
        print("\n".join(rss_lines))
    finally:
        stop_sending.set()
        net.stop()
