"""One admission path (issue 15): what the pool refuses is never published, and what it takes
raises its event once, whichever door it came in by (gossip, RPC, the node's own roles).

Two live nodes run in one trio nursery on 127.0.0.1 over a devnet chain both imported; the
first serves JSON-RPC and the ``/ws`` WebSocket. The clock is fake and set inside the period
the devnet's next PoI is for, so the pool's period windows hold for the whole test.
"""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio
from trio_websocket import open_websocket_url

from chain.consensus import period_end, period_of
from chain.devnet import Devnet, DevnetConfig
from chain.proofs import Vote
from daimon_node.clock import FakeClock
from daimon_node.config import load_config
from daimon_node.daemon.node import Node
from daimon_node.keystore import init_data_dir
from daimon_node.rpc.client import RpcClient
from p2p import chain_topic

sys.path.insert(0, str(Path(__file__).parent.parent / "chain"))
from factories import make_proof  # noqa: E402

# Every wait is bounded by the gossip layer's own pace: a mesh forms within a few heartbeats
# (py-libp2p's heartbeat is 1 s) and a message crosses one hop in well under one; 30 s is
# ten times the slowest of these on a loaded machine.
NETWORK_S = 30.0


@dataclass
class Pair:
    devnet: Devnet
    first: Node
    second: Node


def _node(path: Path, devnet: Devnet, now: float, bootstrap: list[str], rpc: bool) -> Node:
    init_data_dir(path)
    config = load_config(None, {"node.data_dir": str(path), "rpc.enabled": rpc, "rpc.port": 0,
                                "p2p.bootstrap": bootstrap})
    node = Node(config, clock=FakeClock(now))
    for data in devnet.contents.values():
        node.content.put(data)
    handle, _ = node.chains.add_proposal(devnet.proposal)
    for block in devnet.blocks:
        node.chains.import_block(handle, block.encode())
    return node


@asynccontextmanager
async def two_nodes(tmp_path: Path) -> AsyncIterator[Pair]:
    """Two connected nodes, both on the devnet's head, in the period after it."""
    d = Devnet(DevnetConfig())
    d.start()
    d.bond_validators()
    proof = make_proof(d)  # registers the model (one block); the PoI is for the next period
    now = period_end(d.params, d.period) + 1
    assert period_of(d.params, int(now)) == proof.poi.period
    first = _node(tmp_path / "first", d, now, [], rpc=True)
    async with trio.open_nursery() as nursery:
        await nursery.start(first.run)
        second = _node(tmp_path / "second", d, now, first.p2p.listen_addrs(), rpc=False)
        await nursery.start(second.run)
        pair = Pair(d, first, second)
        pair.proof = proof  # type: ignore[attr-defined]
        yield pair
        nursery.cancel_scope.cancel()


async def _meshed(pair: Pair, kind: str) -> None:
    topic = chain_topic(pair.devnet.chain_id, kind)
    while pair.second.p2p.peer_id not in pair.first.p2p.topic_peers(topic):
        await trio.sleep(0.1)


async def _rpc(port: int, call):  # type: ignore[no-untyped-def]
    def run():  # type: ignore[no-untyped-def]
        with RpcClient(f"http://127.0.0.1:{port}", timeout=NETWORK_S) as client:
            return call(client)

    return await trio.to_thread.run_sync(run)


@pytest.mark.trio
async def test_a_poi_submitted_over_rpc_raises_the_proofs_event(tmp_path: Path) -> None:
    """It used to be added to the pool twice: the second add was a duplicate, so no event fired."""
    async with two_nodes(tmp_path) as pair:
        poi = pair.proof.poi  # type: ignore[attr-defined]
        chain = "0x" + pair.devnet.chain_id.hex()
        with trio.fail_after(NETWORK_S):
            async with open_websocket_url(f"ws://127.0.0.1:{pair.first.rpc_port}/ws") as ws:
                await ws.send_message(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "daimon_subscribe",
                                                  "params": ["proofs", chain]}))
                assert "result" in json.loads(await ws.get_message())
                await _rpc(pair.first.rpc_port, lambda c: c.submit_proof(pair.devnet.chain_id, poi.encode()))
                note = json.loads(await ws.get_message())
        assert note["method"] == "daimon_subscription"
        assert note["params"]["result"]["poi"] == "0x" + poi.hash.hex()  # render.proof_event, the one event shape


@pytest.mark.trio
async def test_a_vote_the_pool_refuses_is_not_published(tmp_path: Path) -> None:
    """A vote from an unbonded key is refused by the first node's pool; the second never sees it.

    A bonded validator's vote, published after it, is the witness that gossip between the two
    works: once it is in the second node's pool, the refused one (sent first, on the same
    stream) would have been judged there too.
    """
    async with two_nodes(tmp_path) as pair:
        d, proof = pair.devnet, pair.proof  # type: ignore[attr-defined]
        unbonded: Vote = d.vote(d.improver_keys[1], proof.poi, proof.reveal)
        bonded: Vote = proof.votes[0]
        first = pair.first.chains.get(d.chain_id)
        second = pair.second.chains.get(d.chain_id)
        assert first is not None and second is not None
        with trio.fail_after(NETWORK_S):
            await _meshed(pair, "votes")
            await pair.first.context.publish_vote(first, unbonded.encode())
            assert unbonded.validator not in first.mempool.votes.get(proof.poi.hash, {})
            await pair.first.context.publish_vote(first, bonded.encode())
            while bonded.validator not in second.mempool.votes.get(proof.poi.hash, {}):
                await trio.sleep(0.1)
        assert pair.second.metrics.gossip.get(("vote", "reject"), 0) == 0
        assert unbonded.validator not in second.mempool.votes.get(proof.poi.hash, {})
