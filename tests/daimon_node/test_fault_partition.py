"""Partition and heal (issue 13): a 4-process testnet split 2 | 2 by TCP proxies, then healed.

Every node knows its peers only through per-link proxies on 127.0.0.1 that the
test controls (``linkproxy.py``); cutting a link resets its connections and
refuses new ones. A direct connection around the proxies (an address learned by
identify or gossip and dialled behind our back) would void the partition, so the
test watches every node's TCP connections and fails on one.

The split: side A = nodes 0 and 1 (committers 0 and 1, improver 1 with the weak
model), side B = nodes 2 and 3 (committer 2, improver 2 with the linear model).
The in-turn committer of period k is ``committers[k mod 3]``, weight 2 in turn,
1 out of turn, and the test gives both sides a transfer every period, so both
seal a block every period: over any 3 consecutive periods A gains 2+2+1 = 5 and
B 1+1+2 = 4. A is therefore the heavier side, predictably; the test heals only
once A leads by 2 (over any window B gains at most 1 on A, so A stays strictly
heavier while the halves find each other again).

Checked: both halves build blocks while cut, and neither anchors a PoI: each
holds 2 of 4 equal validator bonds, below the quorum of stake a PoI needs (more
than half, by default 2/3), so no side of a split can pay an improvement that
the other side would later undo; after the heal all four nodes end on one head,
which extends A's head at the heal and is at least as heavy as any head any
node ever had; the improvers' proofs then reach the quorum and settle on the
one chain, each model paid at most once (the better one exactly once); every
transfer either side accepted is in the final chain exactly once; every node's
balances at the final head are equal to the other nodes' and to a from-scratch
replay of its own store.
"""

from __future__ import annotations

import socket
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pytest
import tomli_w

from chain.builder import make_transaction
from chain.consensus import block_weight, period_of
from chain.crypto import KeyPair
from chain.state import get_account
from chain.payloads import Transfer
from daimon_node.proofs.poi import model_digest
from daimon_node.proofs.problem_kit import load_problem
from daimon_node.daemon.replay import replay_chain
from daimon_node.daemon.syncing import SYNC_INTERVAL_S
from daimon_node.harness.testnet import Testnet, TestnetPlan, prepare_testnet
from linkproxy import Proxies
from netutil import free_base_port, try_call, wait_for
from p2p import P2PConfig, peer_id_from_seed

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]

T_P, T_B, GRACE = 10, 6, 3
START_DELAY = 8
SIDE_A, SIDE_B = (0, 1), (2, 3)
SENDER_A, SENDER_B = 0, 3  # one transfer per period from each side (node 3 has no other role but validator)
LEAD_AT_HEAL = 2  # A's weight lead before healing (see the module docstring)
MIN_CUT_PERIODS = 4  # "several periods"; both sides' improvements need about as many anyway
# A first improvement takes 3 periods after its registration block: PoI + votes, anchor, reveal.
IMPROVEMENT_PERIODS = 4
# Bootstrap re-dials back off base, 2 base, 4 base... up to a cap (jittered down to half): a link cut
# for C seconds is re-dialled at most min(cap, C + base) s after the heal; then a sync round.
_P2P_DEFAULTS = P2PConfig.__dataclass_fields__
BACKOFF_BASE_S, BACKOFF_MAX_S = _P2P_DEFAULTS["backoff_base_s"].default, _P2P_DEFAULTS["backoff_max_s"].default


@dataclass
class Observer:
    """Heads and cumulative weights seen over RPC, computed here with ``chain.consensus.block_weight``."""

    chain: str
    params: Any
    weight_of: dict[str, int] = field(default_factory=dict)  # block hash -> cumulative weight
    blocks: dict[str, dict[str, Any]] = field(default_factory=dict)
    max_weight_seen: int = 0

    def block(self, port: int, block_hash: str) -> dict[str, Any] | None:
        if block_hash not in self.blocks:
            b = try_call(port, lambda c: c.get_block_by_hash(self.chain, block_hash))
            if b is None:
                return None
            self.blocks[block_hash] = b
        return self.blocks[block_hash]

    def weight(self, port: int, head: dict[str, Any]) -> int | None:
        chain = [head]
        while chain[-1]["hash"] not in self.weight_of and chain[-1]["height"] > 0:
            parent = self.block(port, chain[-1]["parent"])
            if parent is None:
                return None
            chain.append(parent)
        base = self.weight_of.get(chain[-1]["hash"])
        if base is not None:
            chain.pop()
        else:
            base = 0
        for b in reversed(chain):
            base += block_weight(self.params, b["period"], bytes.fromhex(b["committer"][2:]))
            self.weight_of[b["hash"]] = base
            self.blocks[b["hash"]] = b
        return base

    def head(self, port: int) -> tuple[dict[str, Any], int] | None:
        head = try_call(port, lambda c: c.get_block_by_number(self.chain, c.block_number(self.chain)))
        if head is None:
            return None
        w = self.weight(port, head)
        if w is None:
            return None
        self.max_weight_seen = max(self.max_weight_seen, w)
        return head, w

    def ancestry(self, port: int, head: dict[str, Any], stop_height: int) -> list[dict[str, Any]]:
        """``head`` and its ancestors down to ``stop_height`` (inclusive), newest first."""
        out = [head]
        while out[-1]["height"] > stop_height:
            parent = self.block(port, out[-1]["parent"])
            assert parent is not None, f"block {out[-1]['parent']} not served"
            out.append(parent)
        return out


def route_through_proxies(plan: TestnetPlan, proxies: Proxies, closed_port: int) -> None:
    """Point every bootstrap address at a proxy of its own link (same peer id, proxy's port).

    Nodes also announce ``closed_port`` (bound by the test, never listening) instead of their
    listen address: identify and the signed peer record in every gossip RPC would otherwise
    teach each peer the real address, and libp2p dials every address it knows for a peer.
    The DHT is off: its lookups hand out the addresses other nodes dialled, which here are
    proxies of *their* links, so node 0 could reach node 3 through link 2-3's proxy, which a
    cut between the sides leaves open (a real partition leaves no path at all).
    """
    for i, path in enumerate(plan.configs):
        cfg = tomllib.loads(path.read_text())
        cfg["p2p"]["announce"] = [f"/ip4/127.0.0.1/tcp/{closed_port}"]
        cfg["p2p"]["dht"] = False
        routed = []
        for addr in cfg["p2p"]["bootstrap"]:
            parts = addr.split("/")  # ['', 'ip4', ip, 'tcp', port, 'p2p', id]
            j = plan.p2p_ports.index(int(parts[4]))
            assert parts[6] == peer_id_from_seed(plan.keys[j].seed)
            routed.append(f"/ip4/127.0.0.1/tcp/{proxies.add(i, j, int(parts[4]))}/p2p/{parts[6]}")
        cfg["p2p"]["bootstrap"] = routed
        path.write_text(tomli_w.dumps(cfg))


def direct_links(net: Testnet, p2p_ports: list[int]) -> list[str]:
    """TCP connections from a node straight to another node's listen port (not through a proxy)."""
    found = []
    for i, proc in list(net.procs.items()):
        try:
            conns = psutil.Process(proc.pid).net_connections(kind="tcp")
        except psutil.Error:
            continue
        for c in conns:
            if c.raddr and c.raddr.port in p2p_ports and c.status == psutil.CONN_ESTABLISHED:
                found.append(f"node {i} -> node {p2p_ports.index(c.raddr.port)}")
    return found


@dataclass
class Feeder:
    """One transfer per period from one sender through one node, so that side seals every period."""

    plan: TestnetPlan
    sender: KeyPair
    port: int
    to: bytes
    nonce: int = -1
    last_period: int = -1
    stopped: bool = False
    sent: list[str] = field(default_factory=list)  # tx hashes accepted by the node

    def step(self, period: int) -> None:
        chain = "0x" + self.plan.chain_id.hex()
        if self.stopped or period <= self.last_period:
            return
        if self.nonce < 0:
            bal = try_call(self.port, lambda c: c.get_balance(chain, "0x" + self.sender.address))
            if not bal or bal["locked"] == 0:
                return  # wait until the node's own bond tx is in: it uses the same key and nonces
            self.nonce = try_call(self.port, lambda c: c.get_nonce(chain, "0x" + self.sender.address))
            if self.nonce is None:
                self.nonce = -1
                return
        fee = load_problem(self.plan.problem_dir).params.min_fee  # a transfer below the floor is refused
        tx = make_transaction(self.sender, self.plan.chain_id, self.nonce, Transfer(self.to, 1 + len(self.sent)), fee)
        if try_call(self.port, lambda c: c.send_raw_transaction(chain, "0x" + tx.encode().hex())) is not None:
            self.sent.append("0x" + tx.hash.hex())
            self.nonce += 1
            self.last_period = period


def test_partition_two_two_then_heal(tmp_path: Path) -> None:
    base = free_base_port(4)
    plan = prepare_testnet(tmp_path / "net", 4, t_p=T_P, t_b=T_B, grace=GRACE, base_port=base,
                           start_delay=START_DELAY)
    chain = "0x" + plan.chain_id.hex()
    params = load_problem(plan.problem_dir).params
    ports = plan.rpc_ports
    linear = "0x" + model_digest(plan.models["linear"].read_bytes()).hex()  # node 2's, side B
    obs = Observer(chain, params)
    feeders = [Feeder(plan, plan.keys[SENDER_A], ports[SENDER_A], plan.keys[1].address_bytes),
               Feeder(plan, plan.keys[SENDER_B], ports[SENDER_B], plan.keys[2].address_bytes)]
    leaks: list[str] = []

    def period_now() -> int:
        return period_of(params, int(time.time()))

    def tick() -> None:
        """Each poll: feed both sides, look for connections around the proxies."""
        for f in feeders:
            f.step(period_now())
        leaks.extend(direct_links(net, plan.p2p_ports))

    def heads(nodes: tuple[int, ...] | range) -> list[tuple[dict[str, Any], int] | None]:
        return [obs.head(ports[i]) for i in nodes]

    closed = socket.socket()  # bound, never listening: a dial there is refused at once
    closed.bind(("127.0.0.1", 0))
    proxies = Proxies()
    route_through_proxies(plan, proxies, closed.getsockname()[1])
    net = Testnet(plan)
    net.start()
    try:
        def agreed(nodes: tuple[int, ...] | range) -> tuple[dict[str, Any], int] | None:
            tick()
            hs = heads(nodes)
            if any(h is None for h in hs) or len({h[0]["hash"] for h in hs if h}) != 1:
                return None
            return hs[0]

        # The Problem block is due T_P after t0 (START_DELAY after the plan), out of turn GRACE later.
        wait_for("the Problem block on every node", lambda: agreed(range(4)), START_DELAY + T_P + GRACE + 60)
        fork = agreed(range(4))
        assert fork is not None
        fork_block, _ = fork

        # --- cut ----------------------------------------------------------------------------
        cut_at, cut_period = time.monotonic(), period_now()
        proxies.cut(set(SIDE_A))
        wait_for("each node to see only its own side",
                 lambda: (tick(), all(try_call(p, lambda c: c.peer_count()) == 1 for p in ports))[1], 2 * T_B)

        def sides_progressed() -> tuple[tuple[dict[str, Any], int], tuple[dict[str, Any], int]] | None:
            a, b = agreed(SIDE_A), agreed(SIDE_B)
            if a is None or b is None:
                return None
            ok = (a[0]["hash"] != b[0]["hash"] and a[1] - b[1] >= LEAD_AT_HEAL
                  and period_now() - cut_period >= MIN_CUT_PERIODS)
            return (a, b) if ok else None

        # Long enough for a registration, a PoI and its anchor (IMPROVEMENT_PERIODS) had the quorum
        # been reachable; A's lead grows 1 per 3 periods. The heads are the ones the wait saw (asked
        # again, a side may be mid-way through taking its next block).
        (a_head, a_weight), (b_head, b_weight) = wait_for(
            "both sides to build blocks and A to lead by 2", sides_progressed,
            (IMPROVEMENT_PERIODS + 3 * LEAD_AT_HEAL + 2) * T_B + GRACE)
        assert a_weight > b_weight, (a_weight, b_weight)
        assert not leaks, f"connections around the proxies while cut: {leaks}"
        cut_periods = period_now() - cut_period
        cut_s = time.monotonic() - cut_at
        b_branch = obs.ancestry(ports[SIDE_B[0]], b_head, fork_block["height"] + 1)
        assert min(b["height"] for b in b_branch) == fork_block["height"] + 1
        a_branch = obs.ancestry(ports[SIDE_A[0]], a_head, fork_block["height"] + 1)
        assert len(a_branch) >= 3 and len(b_branch) >= 3  # both halves kept sealing blocks
        # Half the stake is below the quorum: no side anchored a PoI while cut.
        assert not [b["anchor"] for b in a_branch + b_branch if b.get("anchor")]
        assert all(p.refused > 0 for p in proxies.crossing(set(SIDE_A)))  # the cut links were re-dialled

        # --- heal ---------------------------------------------------------------------------
        proxies.heal()
        healed_at = time.monotonic()

        def converged() -> bool:
            h = agreed(range(4))
            if h is None or h[0]["height"] < a_head["height"]:
                return False
            return obs.ancestry(ports[0], h[0], a_head["height"])[-1]["hash"] == a_head["hash"]

        # Re-dial, one sync round, and periods for imports and reorgs on a loaded machine.
        wait_for("all four nodes on one head that extends A's", converged,
                 min(BACKOFF_MAX_S, cut_s + BACKOFF_BASE_S) + SYNC_INTERVAL_S + 4 * T_B)
        converge_s = time.monotonic() - healed_at

        # Joined, the validators reach the quorum: B's improver settles on the one chain.
        def linear_settled_everywhere() -> bool:
            if agreed(range(4)) is None:
                return False
            return all((try_call(p, lambda c: c.best_model(chain)) or {}).get("model_digest") == linear for p in ports)

        wait_for("B's improvement settled on the joined chain", linear_settled_everywhere,
                 (IMPROVEMENT_PERIODS + 2) * T_B + GRACE)

        # Stop feeding; wait until every sent transfer is in and the head has stood still a period.
        def all_sent_included() -> bool:
            h = agreed(range(4))
            if h is None:
                return False
            included = {t for b in obs.ancestry(ports[0], h[0], 0) for t in b.get("transactions", [])}
            return all(t in included for f in feeders for t in f.sent)

        for f in feeders:
            f.stopped = True
        feeders_sent = [list(f.sent) for f in feeders]
        wait_for("every accepted transfer in the final chain", all_sent_included, 3 * T_B + GRACE)
        final = agreed(range(4))
        assert final is not None
        time.sleep(T_B + GRACE)  # a block sealed now would show in the check just below
        final_head, final_weight = agreed(range(4)) or (None, 0)
        assert final_head is not None and final_head["hash"] == final[0]["hash"], "chain still moving"
        balances = [{k.address: try_call(p, lambda c, k=k: c.get_balance(chain, "0x" + k.address)) for k in plan.keys}
                    for p in ports]
        assert agreed(range(4)) is not None and agreed(range(4))[0]["hash"] == final_head["hash"]
        canonical = obs.ancestry(ports[0], final_head, 0)
        assert not leaks, f"connections around the proxies: {leaks}"
    finally:
        net.stop()
        proxies.close()
        closed.close()

    print(f"\npartition: {cut_periods} periods ({cut_s:.0f} s) cut; A weight {a_weight} vs B {b_weight}; "
          f"heal to one head in {converge_s:.1f} s; final height {final_head['height']}")

    # The survivor is the heaviest: it extends A's head, and no node ever saw a heavier head.
    assert final_weight >= obs.max_weight_seen
    hashes = [b["hash"] for b in canonical]
    assert a_head["hash"] in hashes and b_head["hash"] not in hashes
    # No transfer lost or doubled.
    included = [t for b in canonical for t in b.get("transactions", [])]
    for sent in feeders_sent:
        assert sent and all(included.count(t) == 1 for t in sent), sent

    # Every node's balances: equal to the others' and to a from-scratch replay of its own store.
    roots = set()
    for i in range(4):
        replay = replay_chain(plan.directory / f"node{i}", plan.chain_id)
        assert replay.blocks[-1].hash.hex() == final_head["hash"][2:]
        roots.add(replay.state.root)
        for k in plan.keys:
            acct = get_account(replay.state, k.address_bytes)
            assert balances[i][k.address] == {"spendable": acct.balance, "locked": acct.locked}, (i, k.address)
        settled = [r.settlement for r in replay.receipts if r.settlement is not None and r.settlement.outcome == "settled"]
        # Each model is paid at most once; the better (linear) exactly once. The weak one settles
        # only if it was anchored before the linear one, which then beats it.
        assert [s.improver for s in settled].count(plan.keys[2].address_bytes) == 1
        assert [s.improver for s in settled].count(plan.keys[1].address_bytes) <= 1
    assert len(roots) == 1
    assert all(b == balances[0] for b in balances)
