"""Issue 14 on the live network: an adversarial peer against a 4-process testnet.

Nodes 0-2 commit in turn, node 0 contributes the problem, nodes 1 and 2 compete as
improvers (a weak and a linear digits model), every node validates, and a funded key of
the test's own sends a paying transfer every ``TX_INTERVAL_S``. The adversary
(``adversary_peer.py``, its own process and libp2p identities) holds committer 0's seed
and, while that goes on:

- finding 2: orphans (committer 0's turn ``ORPHAN_PERIOD`` built on the block before the
  head, timestamp ground, sent just before the period ends so that node 0 does not sign
  that period itself), then equivocates (a second block for ``TWIN_PERIOD``, which node 0
  sealed, sent to node 3 alone), then signs a block after its ejection;
- finding 3: sends junk blocks (unsigned, badly signed, signed by no committer, two of
  about 1 MB, a side block, bytes that are no block) to nodes 2 and 3;
- finding 5: sends zero-fee, below-``min_fee`` and unfunded model claims to nodes 2 and 3
  on the txs topic, while the test sends the same kinds to node 1 over RPC.

Asserted: the nodes keep one chain (the replaced block and the twinned block stay
canonical everywhere, neither the orphan nor the twin is); the twin is not relayed (only
node 3 stores it); a ``ReportEquivocation`` with the two headers lands on chain, committer
0 is ejected there (spendable balance burned), signs no later block and its block after the
ejection is stored nowhere, and its turns are filled out of turn after the grace; no junk
block is stored anywhere (every block any store holds carries a listed committer's valid
signature) and nodes 0 and 1 never see one (not relayed), the junk and spam identities
are banned by the nodes they wrote to; spam is refused over RPC with the rule's name and is
in no block, and every honest transfer is included; every anchored PoI settles, the linear
model ends best, and every honest key's holdings equal genesis plus what the chain paid it
minus what it paid; every node's state equals a replay of its own store from scratch.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
from hashlib import sha256
from pathlib import Path
from typing import Any

import pytest

from chain.builder import make_transaction
from chain.consensus import in_turn_committer, period_end
from chain.crypto import KeyPair, address_bytes
from chain.signing import is_valid_signature
from chain.state import State, get_account, get_meta, is_ejected
from chain.store import P_BLOCK, ChainStore
from chain.transition import process_block
from chain.payloads import RegisterDigest, ReportEquivocation, Transfer
from chain.proofs import model_claim
from chain.types import split_block
from daimon_node.daemon.chains import content_env
from daimon_node.proofs.problem_kit import load_problem
from daimon_node.daemon.replay import Replay, replay_chain
from daimon_node.rpc.errors import Rejected
from daimon_node.harness.testnet import Testnet, prepare_testnet
from netutil import free_base_port, rpc, try_call, wait_for
from p2p import ContentStore

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

T_P, T_B, GRACE = 10, 6, 3
START_DELAY = 8  # t0 after the plan is written: time for four node processes to start
NODE_START_S = 30  # a node process's imports and first dial, on a loaded machine
GENESIS = 1000 * 10**18
STOLEN = 0  # committer 0's seed goes to the adversary: node 0 contributes and validates but does
# not improve, so burning its spendable balance costs no honest PoI its bond
COMMITTERS = 3  # prepare_testnet: nodes 0-2, in turn k mod 3
ORPHAN_PERIOD = 3  # committer 0's first turn after block 1 (bonds and model claims): replaces block 2
TWIN_PERIOD = ORPHAN_PERIOD + COMMITTERS  # its next turn
# The report lands in the block after the twin's, so committer 0 is ejected before its next turn.
EJECTED_TURN = TWIN_PERIOD + COMMITTERS
JUNK_PERIOD = ORPHAN_PERIOD + 1
TWIN_TARGET = 3  # the one node that gets the twin: a node that relayed it would hand it on
JUNK_TARGETS = (2, 3)  # nodes 0 and 1 never hear from the junk and spam identities directly
TX_INTERVAL_S = 1.0  # honest transfers: 6 per period, so no period is skipped for lack of work
ADVERSARY = Path(__file__).with_name("adversary_peer.py")


def heads(ports: list[int], chain: str) -> list[Any]:
    return [try_call(p, lambda c: c.get_block_by_number(chain, c.block_number(chain))) for p in ports]


def agree(ports: list[int], chain: str) -> bool:
    hs = heads(ports, chain)
    return all(h is not None for h in hs) and len({h["hash"] for h in hs}) == 1


def gossip_count(port: int, kind: str, verdict: str) -> float:
    """``daimon_gossip_messages{kind, verdict}`` from the node's /metrics (0 if never counted)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    for line in text.splitlines():
        if line.startswith("daimon_gossip_messages{") and f'kind="{kind}"' in line and f'verdict="{verdict}"' in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


class HonestSender:
    """Paying transfers from the test's own funded key to node 1, every ``TX_INTERVAL_S``."""

    def __init__(self, keys: KeyPair, to: bytes, chain_id: bytes, port: int, fee: int) -> None:
        self.keys, self.to, self.chain_id, self.port, self.fee = keys, to, chain_id, port, fee
        self.sent: list[str] = []  # tx hashes, in nonce order
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        chain = "0x" + self.chain_id.hex()
        while not self.stop.wait(TX_INTERVAL_S):
            tx = make_transaction(self.keys, self.chain_id, len(self.sent), Transfer(self.to, 1), self.fee)
            if try_call(self.port, lambda c: c.send_raw_transaction(chain, "0x" + tx.encode().hex())):
                self.sent.append(tx.hash.hex())


def rpc_spam(port: int, chain_id: bytes, min_fee: int) -> list[str]:
    """Zero-fee, below-minimum and unfunded model claims over RPC: each refused with its rule's name.

    A claim moves no money, so before the minimum fee an unfunded key paid its zero fee in full.
    """
    chain = "0x" + chain_id.hex()
    hashes = []
    for fee, rule in ((0, "FeeTooLow"), (min_fee - 1, "FeeTooLow"), (min_fee, "cost_above_balance")):
        keys = KeyPair.from_label(f"rpc-never-funded-{fee}")
        claim = model_claim(keys.public_key, sha256(b"rpc spam").digest())
        tx = make_transaction(keys, chain_id, 0, RegisterDigest(claim), fee)
        with rpc(port) as client, pytest.raises(Rejected, match=rule):
            client.send_raw_transaction(chain, "0x" + tx.encode().hex())
        hashes.append(tx.hash.hex())
    return hashes


def stored_headers(node_dir: Path, chain_id: bytes) -> list[Any]:
    """The header of every block the node's store holds, canonical or not."""
    with ChainStore(node_dir / "chains" / chain_id.hex()) as store:
        return [split_block(raw)[0] for _, raw in store.db.iterator(prefix=P_BLOCK)]


def states_around(replay: Replay, node_dir: Path, height: int) -> tuple[Any, Any]:
    """The replayed states before and after the canonical block at ``height``."""
    env = content_env(ContentStore(node_dir / "content"))
    before = state = State()
    for block in replay.blocks[: height + 1]:
        before, state = state, process_block(state, block, env).state
    return before, state


def holdings_expected(replay: Replay, address: bytes) -> int:
    """Genesis plus rewards, committer fees and transfers in, minus fees and transfers out."""
    total = GENESIS
    for block, receipt in zip(replay.blocks[1:], replay.receipts[1:]):
        if address_bytes(block.header.committer) == address:
            total += receipt.fees
        s = receipt.settlement
        if s is not None and s.outcome == "settled":
            total += s.improver_reward if s.improver == address else 0
            total += sum(a for v, a in s.validator_rewards if v == address)
        for tx in block.body.transactions:
            if address_bytes(tx.sender) == address:
                total -= tx.fee + (tx.payload.amount if isinstance(tx.payload, Transfer) else 0)
            if isinstance(tx.payload, Transfer) and tx.payload.to == address:
                total += tx.payload.amount
    return total


def test_adversarial_peer_gains_nothing_on_a_live_testnet(tmp_path: Path) -> None:
    base = free_base_port(4)
    sender = KeyPair.from_label("adversarial-testnet-honest-sender")
    plan = prepare_testnet(tmp_path / "net", 4, t_p=T_P, t_b=T_B, grace=GRACE, base_port=base,
                           start_delay=START_DELAY, extra_accounts=(sender.address_bytes,))
    chain = "0x" + plan.chain_id.hex()
    ports = plan.rpc_ports
    params = load_problem(plan.problem_dir).params
    stolen = plan.keys[STOLEN]
    assert in_turn_committer(params, ORPHAN_PERIOD) == in_turn_committer(params, TWIN_PERIOD) == stolen.public_key
    assert in_turn_committer(params, EJECTED_TURN) == stolen.public_key
    net = Testnet(plan)
    net.start()
    honest = HonestSender(sender, plan.keys[3].address_bytes, plan.chain_id, ports[1], params.min_fee)
    adversary: subprocess.Popen[bytes] | None = None
    try:
        wait_for("the Problem block on every node",
                 lambda: all(try_call(p, lambda c: c.block_number(chain)) is not None for p in ports),
                 START_DELAY + T_P + GRACE + NODE_START_S)
        honest.thread.start()
        addrs = [(plan.directory / f"node{i}" / "p2p.addrs").read_text().split()[0] for i in range(4)]
        # The adversary gives up one rotation after the turn it expects to sign in after its ejection.
        deadline = period_end(params, EJECTED_TURN + COMMITTERS)
        argv = [sys.executable, str(ADVERSARY), "--problem-dir", str(plan.problem_dir),
                "--work-dir", str(tmp_path / "adversary"), "--committer-seed", stolen.seed.hex(),
                "--orphan-period", str(ORPHAN_PERIOD), "--twin-period", str(TWIN_PERIOD),
                "--junk-period", str(JUNK_PERIOD), "--twin-target", str(TWIN_TARGET),
                "--deadline", str(deadline)]
        argv += [a for addr in addrs for a in ("--target", addr)]
        argv += [a for i in JUNK_TARGETS for a in ("--junk-target", str(i))]
        adversary = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=open(tmp_path / "adversary.err", "wb"),
                                     env=dict(os.environ, PYTHONPATH=os.getcwd()))

        # Finding 5 over RPC, while the adversary spams the txs topic (after the block of JUNK_PERIOD).
        # Its block comes at its end, out of turn by end + grace; one more period if it was skipped.
        wait_for(f"the block of period {JUNK_PERIOD}",
                 lambda: (heads([ports[1]], chain)[0] or {}).get("period", 0) >= JUNK_PERIOD,
                 period_end(params, JUNK_PERIOD) + GRACE + T_B - time.time())
        rpc_spam_hashes = rpc_spam(ports[1], plan.chain_id, params.min_fee)

        out, _ = adversary.communicate(timeout=deadline - time.time() + 30)  # + its own start and last writes
        report = json.loads(out.decode().splitlines()[-1])
        assert not report.get("errors"), report.get("errors")
        assert net.alive() == [0, 1, 2, 3], "a node died"
        ids = report["identities"]

        # The turn after the ejection is filled out of turn (after the grace), and the linear model
        # (node 2's) ends best, on every node.
        after = report["after_ejection"]

        def settled_after_ejection() -> bool:
            best = try_call(ports[0], lambda c: c.best_model(chain))
            block = try_call(ports[0], lambda c: c.get_block_by_number(chain, c.block_number(chain)))
            return (best is not None and best["prover"] == "0x" + plan.keys[2].address
                    and block is not None and block["period"] >= after["period"] and agree(ports, chain))

        # The ejected turn is filled out of turn at its end + grace; two rival stand-ins (committers 1
        # and 2 both may) agree at the next in-turn block, one period later, and one more to spread.
        wait_for("the linear model settled and a block past the ejected turn, on every node",
                 settled_after_ejection, period_end(params, after["period"]) + GRACE + 2 * T_B - time.time())
        honest.stop.set()
        honest.thread.join(timeout=10)
        # Included (not merely pooled: daimon_getNonce counts the pool): the sender's balance is down
        # by every transfer and its fee, on every node. The last tx waits at most one period for its
        # block, which may come out of turn (+ grace), and a skipped period adds one more.
        spent = len(honest.sent) * (params.min_fee + 1)
        wait_for("every honest transfer included on every node",
                 lambda: all(int((try_call(p, lambda c: c.get_balance(chain, "0x" + sender.address)) or {})
                                 .get("spendable", -1)) == GENESIS - spent for p in ports), 2 * T_B + GRACE)

        # Junk and spam: banned by the nodes they reached; nodes 0 and 1 never saw any (not relayed).
        peers = {i: {p["peer_id"]: p for p in try_call(ports[i], lambda c: c.peers())} for i in range(4)}
        for i in JUNK_TARGETS:
            for name in ("junk", "spammer"):
                assert peers[i][ids[name]]["banned_for_s"] > 0, (i, name, peers[i].get(ids[name]))
            assert peers[i][ids["equivocator"]]["rejected"] >= 1  # the block after its ejection was judged
        assert peers[TWIN_TARGET][ids["equivocator"]]["ignored"] >= 1  # the twin: dropped, not relayed
        for i in set(range(4)) - set(JUNK_TARGETS):
            assert gossip_count(ports[i], "block", "invalid") == 0, i
            assert gossip_count(ports[i], "tx", "reject") == 0, i
        junk_hashes = [j["hash"] for j in report["junk"] if j["hash"]]
        assert len(junk_hashes) == len(report["junk"]) - 1  # all but "not a block"
        for i in range(4):
            for h in [*junk_hashes, after["hash"]]:
                assert try_call(ports[i], lambda c, h=h: c.get_block_by_hash(chain, "0x" + h)) is None, (i, h)
        twin = report["twin"]
        for i in range(4):
            stored = try_call(ports[i], lambda c: c.get_block_by_hash(chain, "0x" + twin["hash"]))
            assert (stored is not None) == (i == TWIN_TARGET), (i, stored)
        print(f"\nload {os.getloadavg()}; adversary: orphan {report['orphan']}; twin {twin}; after ejection {after}")
        print("junk:", [(j["kind"], j["bytes"], j["results"]) for j in report["junk"]])
        print("spam:", [(s["fee"], s["results"]) for s in report["spam"]])
    finally:
        honest.stop.set()
        if adversary is not None and adversary.poll() is None:
            adversary.kill()
        net.stop()

    replays = {i: replay_chain(plan.directory / f"node{i}", plan.chain_id) for i in range(4)}  # roots checked
    # One chain: every node's canonical chain is a prefix of the longest.
    longest = max(replays.values(), key=lambda r: len(r.blocks))
    for i, r in replays.items():
        assert [b.hash for b in r.blocks] == [b.hash for b in longest.blocks[: len(r.blocks)]], i
    blocks, receipts = longest.blocks, longest.receipts
    canonical = {b.hash.hex() for b in blocks}

    # Finding 2, the orphaning move: the block it would replace stays, the orphan never wins.
    orphan = report["orphan"]
    assert orphan["replaced"] in canonical and orphan["hash"] not in canonical, orphan
    # The twin: the first block stays canonical, the twin is not; its evidence ejects committer 0.
    assert twin["first"] in canonical and twin["hash"] not in canonical
    reports = [(b.header.height, tx) for b in blocks[1:] for tx in b.body.transactions
               if isinstance(tx.payload, ReportEquivocation)]
    assert len(reports) == 1, reports
    report_height, report_tx = reports[0]
    pair = {report_tx.payload.first.hash.hex(), report_tx.payload.second.hash.hex()}
    assert pair == {twin["first"], twin["hash"]}, pair
    before, after_state = states_around(longest, plan.directory / f"node{TWIN_TARGET}", report_height)
    assert not is_ejected(before, stolen.public_key) and is_ejected(after_state, stolen.public_key)
    spendable = get_account(before, stolen.address_bytes).balance
    assert spendable > 0 and get_account(after_state, stolen.address_bytes).balance == 0
    assert get_meta(after_state).burned - get_meta(before).burned >= spendable
    later = blocks[report_height + 1:]
    assert all(b.header.committer != stolen.public_key for b in later)
    filled = [b for b in later if in_turn_committer(params, b.header.period) == stolen.public_key]
    assert filled and all(b.header.timestamp >= period_end(params, b.header.period) + GRACE for b in filled)

    # Finding 3: nothing unsigned is stored anywhere.
    for i in range(4):
        for header in stored_headers(plan.directory / f"node{i}", plan.chain_id):
            assert header.committer in params.committers and is_valid_signature(header, plan.chain_id), (i, header)

    # Finding 5: no spam in any block; every honest transfer is.
    included = {tx.hash.hex() for b in blocks[1:] for tx in b.body.transactions}
    spam = {s["hash"] for s in report["spam"]} | set(rpc_spam_hashes)
    assert not spam & included
    assert set(honest.sent) <= included

    # Honest flow: every anchored PoI settled; the linear model is best; no honest key lost anything.
    anchored = [r.anchored for r in receipts if r.anchored is not None]
    settlements = [r.settlement for r in receipts if r.settlement is not None]
    assert anchored and [s.poi_hash for s in settlements] == anchored[: len(settlements)]
    assert all(s.outcome == "settled" for s in settlements), [(s.outcome, s.reason, s.improver.hex()[:12], [k.address[:12] for k in plan.keys]) for s in settlements]
    assert get_meta(longest.state).pending is None
    assert get_meta(longest.state).provisional.owner == plan.keys[2].address_bytes
    for keys in [*plan.keys[1:], sender]:
        acct = get_account(longest.state, keys.address_bytes)
        assert acct.balance + acct.locked == holdings_expected(longest, keys.address_bytes), keys.address
    print(f"blocks {len(blocks)}, settlements {[(s.improver.hex()[:8], s.distances) for s in settlements]}, "
          f"honest transfers {len(honest.sent)}, report in block {report_height}")
