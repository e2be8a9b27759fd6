"""An adversarial peer on a live testnet (issue 14: findings 2, 3 and 5).

Run by ``test_adversarial_testnet.py`` as its own process::

    python tests/daimon_node/adversary_peer.py --problem-dir DIR --work-dir DIR \\
        --committer-seed HEX --target ADDR ... (one per node, in node order) \\
        --orphan-period 3 --twin-period 6 --junk-period 4 --twin-target 3 \\
        --junk-target 2 --junk-target 3 --deadline WALL

It holds the seed of one listed committer (the test owns the testnet's keys). It follows
the chain of the ``--twin-target`` node over the sync protocol from an identity of its
own and replays the blocks with the consensus code, so it knows the state after every
block and can build blocks that are valid. Three more identities write GossipSub publish
frames by hand (as ``flooder.py`` does), so each message goes to chosen nodes only:

- ``equivocator`` (finding 2). The orphaning move: for ``--orphan-period`` (the stolen
  key's turn) a block built on the parent of the head, which skips the head's period and
  would replace it, its timestamp ground for the lowest hash (the tie-break the fork choice
  used to have) among those the nodes accept, sent to every node ``ORPHAN_LEAD_S`` before
  the period ends, so that the key's own node holds it before it seals and does not sign
  that period itself. The twin: once the key's node sealed ``--twin-period``, a second
  block for that period (same parent, the next second, no transactions), sent to the
  ``--twin-target`` node only. Once the chain shows the key ejected, a block for its next
  turn, valid but for the ejection, sent to the ``--junk-target`` nodes.
- ``junk`` (finding 3). Just before the period after ``--junk-period`` ends: blocks no
  committer signed (unsigned, randomly or wrongly signed, signed by a key that is not a
  committer), most of them claiming the in-turn committer, two of about 1 MB (an anchor with ~190,000 ambiguous
  positions, 1 s of decoding before the header was checked first), a child of the head's
  parent (a side block, which used to be stored unchecked), and bytes that are no block.
- ``spammer`` (finding 5). At the same time: model claims (they move no money) from keys
  that were never funded, paying nothing, one unit under the problem's ``min_fee``, and
  exactly ``min_fee``.

It prints one JSON line at the end: the identities' peer ids, every message's hash and
size, and the result of each write.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import time
from hashlib import sha256
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable
from unittest import mock

import multiaddr
import trio
from libp2p import new_host
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.pubsub.gossipsub import PROTOCOL_ID, PROTOCOL_ID_V11
from libp2p.pubsub.pb import rpc_pb2

import chain.transition
from chain import constants as C
from chain.builder import build_improvement_block, make_transaction
from chain.codec import pack
from chain.consensus import in_turn_committer, period_end
from chain.crypto import KeyPair
from chain.errors import DecodeError
from chain.signing import EMPTY_SIGNATURE, sign
from chain.state import State, get_problem, is_ejected
from chain.transition import process_block
from chain.header import BlockHeader
from chain.payloads import RegisterDigest
from chain.proofs import Ambiguous, PoI, model_claim
from chain.types import BLOCK_ARRAY_PREFIX, Anchor, Block, BodyCodec, ImprovementBody, split_block
from daimon_node.daemon.chains import content_env
from daimon_node.proofs.problem_kit import load_problem
from flooder import Forger, drain, frame
from p2p import ContentStore, P2PConfig, P2PNode, chain_topic

ORPHAN_LEAD_S = 1.0  # the orphan is sent this long before its period ends (see orphan_move)
CLOCK_DRIFT_S = 2.0  # what a node accepts ahead of its clock (the testnet's chain.clock_drift_s)
# Timestamps ground for the orphan: every one must be within the drift when it arrives,
# ORPHAN_LEAD_S early: end + g <= end - ORPHAN_LEAD_S + CLOCK_DRIFT_S, so g <= 1.
ORPHAN_GRIND = int(CLOCK_DRIFT_S - ORPHAN_LEAD_S) + 1
POLL_S = 0.25  # how often the chain view is refreshed while waiting for a block
# Two ambiguous sets at the codec's list cap minus a margin: about 1 MB encoded.
BIG_AMBIGUOUS_PER_SET = 95_000
SPAM_PER_FEE = 3  # transfers per fee level from never-funded keys
WRITE_TIMEOUT_S = 10.0  # a 1 MB frame on a loaded machine; a banned peer's write fails sooner


@dataclass
class ChainView:
    """The canonical blocks of one node, replayed: the state after each."""

    env: chain.transition.Env
    blocks: list[Block] = field(default_factory=list)
    states: list[State] = field(default_factory=list)

    def update(self, raws: list[bytes]) -> None:
        """Take the node's canonical chain; replay only what differs from the last one."""
        fresh = [Block.decode(r) for r in raws]
        same = 0
        while same < min(len(fresh), len(self.blocks)) and fresh[same].hash == self.blocks[same].hash:
            same += 1
        del self.blocks[same:], self.states[same:]
        state = self.states[-1] if self.states else State()
        for block in fresh[same:]:
            state = process_block(state, block, self.env).state
            self.blocks.append(block)
            self.states.append(state)


class RawPeer:
    """One libp2p identity writing GossipSub publish frames straight onto a stream per node."""

    def __init__(self, name: str, targets: dict[int, str], topics: list[str], rng: random.Random) -> None:
        self.name = name
        self.targets = targets
        self.topics = topics
        self.forger = Forger(topics, rng)
        self.host = new_host(key_pair=self.forger.key)
        self.streams: dict[int, Any] = {}
        self.log: list[dict[str, Any]] = []

    @property
    def peer_id(self) -> str:
        return self.host.get_id().to_base58()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        for proto in (PROTOCOL_ID_V11, PROTOCOL_ID):
            self.host.set_stream_handler(proto, drain)
        async with self.host.run(listen_addrs=[multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]):
            hello = frame(rpc_pb2.RPC(subscriptions=[rpc_pb2.RPC.SubOpts(subscribe=True, topicid=t)
                                                     for t in self.topics]))
            for i, addr in self.targets.items():
                info = info_from_p2p_addr(multiaddr.Multiaddr(addr))
                with trio.fail_after(10):
                    await self.host.connect(info)
                    stream = await self.host.new_stream(info.peer_id, [PROTOCOL_ID_V11, PROTOCOL_ID])
                    await stream.write(hello)
                self.streams[i] = stream
            task_status.started()
            await trio.sleep_forever()

    async def send(self, i: int, topic: str, data: bytes, what: str) -> str:
        """Publish ``data`` to node ``i`` only; the write's outcome ("written" or the error's type)."""
        msg = self.forger.signed(topic, data)
        try:
            with trio.fail_after(WRITE_TIMEOUT_S):
                await self.streams[i].write(frame(rpc_pb2.RPC(publish=[msg])))
            result = "written"
        except Exception as exc:  # a node that banned us closed the stream: that is the point
            result = type(exc).__name__
        self.log.append({"node": i, "what": what, "result": result, "wall": time.time()})
        return result


@dataclass
class Adversary:
    args: argparse.Namespace
    params: Any
    chain_id: bytes
    key: KeyPair
    view: ChainView
    p2p: P2PNode
    sync_peer: str
    equivocator: RawPeer
    junk: RawPeer
    spammer: RawPeer
    report: dict[str, Any] = field(default_factory=dict)

    @property
    def blocks_topic(self) -> str:
        return chain_topic(self.chain_id, "blocks")

    async def refresh(self) -> None:
        raws: list[bytes] = []
        while True:
            with trio.fail_after(10):
                batch = await self.p2p.request_blocks(self.sync_peer, self.chain_id, len(raws), 64)
            raws += batch
            if len(batch) < 64:
                break
        self.view.update(raws)

    async def wait_for(self, what: str, predicate: Callable[[], Any], until: float) -> Any:
        """Refresh the view until ``predicate()`` is truthy (returned) or the wall time ``until``."""
        while time.time() < until:
            try:
                await self.refresh()
            except Exception as exc:  # a sync hiccup: try again
                self.report.setdefault("sync_errors", []).append(repr(exc)[:200])
            value = predicate()
            if value:
                return value
            await trio.sleep(POLL_S)
        raise TimeoutError(f"gave up waiting for {what}")

    # --- finding 2 ------------------------------------------------------------------
    async def orphan_move(self) -> None:
        """Replace the head (block k) by a block for our turn k+1 built on k-1."""
        period = self.args.orphan_period
        end = period_end(self.params, period)
        await trio.sleep(max(0.0, end - ORPHAN_LEAD_S - time.time()))
        await self.refresh()
        head, parent_state = self.view.blocks[-1], self.view.states[-2]
        candidates = [build_improvement_block(parent_state, self.key, period=period, timestamp=end + g,
                                              env=self.view.env)[0] for g in range(ORPHAN_GRIND)]
        orphan = min(candidates, key=lambda b: b.hash)
        for i in range(len(self.args.target)):
            await self.equivocator.send(i, self.blocks_topic, orphan.encode(), "orphan")
        self.report["orphan"] = {
            "hash": orphan.hash.hex(), "period": period, "parent": orphan.header.parent.hex(),
            "replaced": head.hash.hex(), "replaced_period": head.header.period,
            "replaced_height": head.header.height, "lower_hash_than_replaced": orphan.hash < head.hash,
            "sent_before_end_s": round(end - time.time(), 3),
        }

    async def twin_move(self) -> None:
        """A second block for a period the key's own node sealed, to the twin target only."""
        period = self.args.twin_period

        def sealed() -> int | None:
            for i, b in enumerate(self.view.blocks):
                if b.header.period == period and b.header.committer == self.key.public_key:
                    return i
            return None

        until = period_end(self.params, period) + self.params.grace + self.params.t_b
        index = await self.wait_for(f"our node's block for period {period}", sealed, until)
        first = self.view.blocks[index]
        twin, _ = build_improvement_block(self.view.states[index - 1], self.key, period=period,
                                          timestamp=first.header.timestamp + 1, env=self.view.env)
        await self.equivocator.send(self.args.twin_target, self.blocks_topic, twin.encode(), "twin")
        self.report["twin"] = {"hash": twin.hash.hex(), "first": first.hash.hex(), "period": period,
                               "height": first.header.height}

    async def after_ejection(self) -> None:
        """Once ejected, sign a block for the key's next turn anyway (valid but for the ejection)."""
        until = period_end(self.params, self.args.twin_period + 3)  # report in the next block, + 2 spare
        await self.wait_for("the ejection", lambda: is_ejected(self.view.states[-1], self.key.public_key), until)
        ejected_at = self.view.blocks[-1].header.height
        committers = self.params.committers
        period = self.view.blocks[-1].header.period + 1
        while in_turn_committer(self.params, period) != self.key.public_key or \
                period_end(self.params, period) - ORPHAN_LEAD_S < time.time():
            period += 1
        end = period_end(self.params, period)
        await trio.sleep(max(0.0, end - ORPHAN_LEAD_S - time.time()))
        await self.refresh()
        with mock.patch.object(chain.transition, "check_not_ejected", lambda state, committer: None):
            block, _ = build_improvement_block(self.view.states[-1], self.key, period=period, timestamp=end,
                                               env=self.view.env)
        for i in self.args.junk_target:
            await self.equivocator.send(i, self.blocks_topic, block.encode(), "after-ejection")
        self.report["after_ejection"] = {"hash": block.hash.hex(), "period": period, "seen_ejected_at": ejected_at,
                                         "committers": len(committers)}

    async def equivocate(self) -> None:
        for step in (self.orphan_move, self.twin_move, self.after_ejection):
            try:
                await step()
            except Exception as exc:  # recorded; the test asserts on what is missing
                self.report.setdefault("errors", []).append(f"{step.__name__}: {exc!r}"[:400])
                return

    # --- findings 3 and 5 -------------------------------------------------------------
    async def junk_and_spam(self) -> None:
        until = period_end(self.params, self.args.junk_period) + self.params.grace + self.params.t_b
        try:
            await self.wait_for(f"the block of period {self.args.junk_period}",
                                lambda: self.view.blocks and self.view.blocks[-1].header.period >= self.args.junk_period,
                                until)
        except Exception as exc:
            self.report.setdefault("errors", []).append(f"junk_and_spam: {exc!r}"[:400])
            return
        # The junk claims the next period's in-turn committer, stamped at that period's end: sent
        # ORPHAN_LEAD_S before it, its timestamp is within every node's drift, so no check that
        # comes after the signature's can defer it instead of refusing it.
        await trio.sleep(max(0.0, period_end(self.params, self.args.junk_period + 1) - ORPHAN_LEAD_S - time.time()))
        await self.refresh()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.send_junk)
            nursery.start_soon(self.send_spam)

    async def send_junk(self) -> None:
        sent = []
        for kind, data in junk_blocks(self.view, self.params, random.Random(self.args.seed)):
            try:
                header_hash: str | None = split_block(data)[0].hash.hex()
            except DecodeError:  # "not a block"
                header_hash = None
            results = [await self.junk.send(i, self.blocks_topic, data, kind) for i in self.args.junk_target]
            sent.append({"kind": kind, "hash": header_hash, "bytes": len(data), "results": results})
        self.report["junk"] = sent

    async def send_spam(self) -> None:
        topic = chain_topic(self.chain_id, "txs")
        min_fee = self.params.min_fee
        sent = []
        for fee in (0, min_fee - 1, min_fee):
            for n in range(SPAM_PER_FEE):
                keys = KeyPair.from_label(f"never-funded-{fee}-{n}")
                tx = make_transaction(keys, self.chain_id, 0, spam_payload(keys, n), fee)
                results = [await self.spammer.send(i, topic, tx.encode(), f"tx fee {fee}")
                           for i in self.args.junk_target]
                sent.append({"fee": fee, "hash": tx.hash.hex(), "results": results})
        self.report["spam"] = sent


def spam_payload(keys: KeyPair, n: int) -> RegisterDigest:
    """A model claim: it moves no money, so an unfunded key could pay for it with a zero fee, and
    it adds two records for good (the sender's nonce and the claim), as finding 5 reported."""
    return RegisterDigest(model_claim(keys.public_key, sha256(b"spam %d" % n).digest()))


def junk_blocks(view: ChainView, params: Any, rng: random.Random) -> list[tuple[str, bytes]]:
    """Blocks no listed committer signed, each shaped to reach a different check."""
    head = view.blocks[-1]
    chain_id = get_problem(view.states[-1]).chain_id
    period = head.header.period + 1
    in_turn = in_turn_committer(params, period)
    stranger = KeyPair.from_label("junk-stranger")

    def body_bytes(anchor: Anchor | None = None) -> bytes:
        return pack(BodyCodec().to_obj(ImprovementBody((), None, None, anchor)))

    def header(body: bytes, committer: bytes = in_turn, parent: Block = head, period: int = period) -> BlockHeader:
        return BlockHeader(chain_id, parent.header.height + 1, parent.hash, C.KIND_IMPROVEMENT, period,
                           period_end(params, period), committer, sha256(body).digest(),
                           os.urandom(32), EMPTY_SIGNATURE)

    def block(h: BlockHeader, body: bytes) -> bytes:
        return BLOCK_ARRAY_PREFIX + h.encode() + body

    def forged(h: BlockHeader) -> BlockHeader:
        """The stranger's signature under the in-turn committer's key."""
        return dataclasses.replace(h, signature=sign(h, stranger, chain_id).signature)

    def big_anchor() -> Anchor:
        ambiguous = tuple(tuple(Ambiguous(i, 1) for i in range(BIG_AMBIGUOUS_PER_SET)) for _ in range(2))
        poi = PoI(chain_id, period, head.hash, os.urandom(32), ((0,) * 16,), os.urandom(32), ambiguous,
                  os.urandom(32), stranger.public_key, os.urandom(64))
        return Anchor(poi, ())

    small = body_bytes()
    big = body_bytes(big_anchor())
    side_parent = view.blocks[-2]
    # The side block first: before the header was checked first, it was stored and relayed
    # unchecked; later ones may meet a node that banned us already (5 rejections).
    return [
        ("unsigned side block, in-turn committer",  # a rival of the head, for the head's period
         block(header(small, in_turn_committer(params, head.header.period), side_parent, head.header.period), small)),
        ("unsigned 1 MB, in-turn committer", block(header(big), big)),
        ("unsigned, in-turn committer", block(header(small), small)),
        ("forged 1 MB, in-turn committer", block(forged(header(big)), big)),
        ("random signature, in-turn committer", block(dataclasses.replace(header(small), signature=rng.randbytes(64)), small)),
        ("forged signature, in-turn committer", block(forged(header(small)), small)),
        ("signed by a key that is no committer", block(sign(header(small, stranger.public_key), stranger, chain_id), small)),
        ("not a block", pack([rng.randrange(2**32), rng.randbytes(200)])),
    ]


async def main_async(args: argparse.Namespace) -> None:
    problem = load_problem(Path(args.problem_dir))
    params, chain_id = problem.proposal.params, problem.proposal.chain_id
    work = Path(args.work_dir)
    content = ContentStore(work / "content")
    for path in Path(args.problem_dir).iterdir():  # the problem's content: Z and the DEL, by id
        if len(path.name) == 64 and all(c in "0123456789abcdef" for c in path.name):
            content.put(path.read_bytes())
    rng = random.Random(args.seed)
    topics = [chain_topic(chain_id, k) for k in ("blocks", "txs")]
    everyone = dict(enumerate(args.target))
    sync_addr = args.target[args.twin_target]
    p2p = P2PNode(P2PConfig(seed=rng.randbytes(32), content_dir=work / "p2p-content", bootstrap=(sync_addr,)))
    equivocator = RawPeer("equivocator", everyone, topics, random.Random(rng.random()))
    junk = RawPeer("junk", {i: args.target[i] for i in args.junk_target}, topics, random.Random(rng.random()))
    spammer = RawPeer("spammer", {i: args.target[i] for i in args.junk_target}, topics, random.Random(rng.random()))
    adversary = Adversary(args, params, chain_id, KeyPair(bytes.fromhex(args.committer_seed)),
                          ChainView(content_env(content)), p2p, sync_addr.rsplit("/p2p/", 1)[1],
                          equivocator, junk, spammer)
    with trio.move_on_at(trio.current_time() + max(1.0, args.deadline - time.time())):
        async with trio.open_nursery() as nursery:
            await nursery.start(p2p.run)
            for peer in (equivocator, junk, spammer):
                await nursery.start(peer.run)
            with trio.fail_after(20):
                while not p2p.connected_peers():
                    await trio.sleep(0.1)
            async with trio.open_nursery() as attacks:
                attacks.start_soon(adversary.equivocate)
                attacks.start_soon(adversary.junk_and_spam)
            nursery.cancel_scope.cancel()
    out = {
        "event": "done",
        "identities": {p.name: p.peer_id for p in (equivocator, junk, spammer)},
        "sync_identity": p2p.peer_id,
        "writes": {p.name: p.log for p in (equivocator, junk, spammer)},
        **adversary.report,
    }
    print(json.dumps(out), flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--problem-dir", required=True)
    p.add_argument("--work-dir", required=True)
    p.add_argument("--committer-seed", required=True, help="hex seed of the listed committer to abuse")
    p.add_argument("--target", action="append", required=True, help="node multiaddrs, in node order")
    p.add_argument("--orphan-period", type=int, required=True)
    p.add_argument("--twin-period", type=int, required=True)
    p.add_argument("--junk-period", type=int, required=True)
    p.add_argument("--twin-target", type=int, required=True, help="the node that gets the twin (and is followed)")
    p.add_argument("--junk-target", type=int, action="append", required=True)
    p.add_argument("--deadline", type=float, required=True, help="wall time to give up by")
    p.add_argument("--seed", type=int, default=14)
    trio.run(main_async, p.parse_args())


if __name__ == "__main__":
    main()
