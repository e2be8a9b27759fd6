"""Helpers for the attacks: a node's pool and committer on top of a devnet, and fresh keys."""

from __future__ import annotations

from chain.consensus import period_end
from chain.crypto import KeyPair
from chain.devnet import Devnet
from chain.state import State
from chain.types import Block
from daimon_node.daemon.committer import build_block
from daimon_node.daemon.mempool import Mempool
from factories import accept


def pool_of(d: Devnet) -> Mempool:
    return Mempool(d.chain_id)


def commit_from_pool(d: Devnet, pool: Mempool) -> Block | None:
    """What the in-turn committer of the devnet's next period seals from ``pool``, made the head."""
    period = d.period + 1
    now = period_end(d.params, period)  # the first instant the block for ``period`` may be sealed
    block = build_block(d.state, pool, d.committer_for(period), now, d.env)
    if block is None:
        return None
    accept(d, block)
    pool.prune(d.state, now)
    return block


def fresh_keys(tag: str, count: int) -> list[KeyPair]:
    return [KeyPair.from_label(f"{tag}-{i}") for i in range(count)]


def record_count(state: State) -> int:
    """State records (every one is kept by every node for good)."""
    return sum(1 for _ in state.items())
