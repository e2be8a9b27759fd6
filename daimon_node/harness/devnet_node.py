"""A node over a devnet chain, with no network started: what the RPC answers from a real store.

``chain.devnet`` builds the blocks; they are imported one by one through the node's own
``ChainManager`` into a LevelDB data directory, with the content they need in the node's
content store, so ``NodeBackend`` reads a real store and state. The node's libp2p host is
built but never started: it has no peers, and what it would gossip goes nowhere. Used by
the RPC tests and ``benchmarks/rpc_bench.py``.
"""

from __future__ import annotations

from pathlib import Path

from chain.consensus import period_start
from chain.devnet import Devnet
from daimon_node.clock import FakeClock
from daimon_node.config import NodeConfig
from daimon_node.daemon.backend import NodeBackend
from daimon_node.daemon.chains import ImportVerdict
from daimon_node.daemon.node import Node
from daimon_node.keystore import init_data_dir


def open_node(data_dir: Path, devnet: Devnet) -> Node:
    """A node on ``data_dir`` whose clock is at the start of the period after the devnet's head:
    the period whose proofs, votes and transactions the chain takes next."""
    init_data_dir(data_dir, exist_ok=True)
    config = NodeConfig()
    config.node.data_dir = str(data_dir)
    config.p2p.listen = "/ip4/127.0.0.1/tcp/0"
    config.rpc.enabled = False
    return Node(config, clock=FakeClock(period_start(devnet.params, devnet.period + 1)))


def import_devnet(node: Node, devnet: Devnet) -> None:
    """The devnet's content, proposal and blocks, through the node's own import path."""
    for data in devnet.contents.values():
        node.content.put(data)
    handle, _ = node.chains.add_proposal(devnet.proposal)
    for block in devnet.blocks:
        report = node.chains.import_block(handle, block.encode())
        if report.verdict is not ImportVerdict.ACCEPTED:
            raise ValueError(f"devnet block {block.header.height} not imported: {report.verdict} {report.error}")


def devnet_node(data_dir: Path, devnet: Devnet) -> Node:
    """A node (never started) holding the devnet's chain."""
    node = open_node(data_dir, devnet)
    import_devnet(node, devnet)
    return node


def devnet_backend(data_dir: Path, devnet: Devnet, cls: type[NodeBackend] = NodeBackend) -> NodeBackend:
    """The RPC backend over such a node, as ``start_rpc`` builds it (through ``NodeAPI`` only)."""
    return cls(devnet_node(data_dir, devnet).services)
