"""Finding 2 (fork choice): a committer cannot orphan the block before its own.

The attack: the in-turn committer of period k+1 builds on block k-1 instead of
block k, and grinds its timestamp until its block's hash is lower than block
k's. Under "equal weight goes to the lowest head hash" and "periods may be
skipped at no cost" that replaced block k on every node. Each test builds the
honest chain with the devnet, runs the attacker against a ``ChainStore`` that
holds block k, and checks the head did not move.
"""

from __future__ import annotations

from pathlib import Path

from chain.builder import build_improvement_block
from chain.consensus import ChainTip, better_tip, block_weight, period_end
from chain.crypto import KeyPair
from chain.devnet import Devnet
from chain.store import ChainStore
from chain.types import Block
from factories import new_devnet, next_block

# The attacker needs its hash below block k's: each timestamp is a fresh uniform
# hash, so the chance that none of 64 tries wins is 2^-64.
GRIND_TRIES = 64


def grind_below(d: Devnet, keys: KeyPair, period: int, target: bytes) -> Block:
    """A valid block by ``keys`` for ``period`` on the devnet's head whose hash is below ``target``."""
    end = period_end(d.params, period)
    for extra in range(GRIND_TRIES):
        block, _ = build_improvement_block(d.state, keys, period=period, timestamp=end + d.params.grace + extra,
                                           env=d.env)
        if block.hash < target:
            return block
    raise AssertionError("grinding failed")


def store_with(tmp_path: Path, d: Devnet, extra: list[Block]) -> ChainStore:
    store = ChainStore(tmp_path / "db")
    for block in [*d.blocks, *extra]:
        store.import_block(block, d.env)
    return store


def test_next_committer_skipping_block_k_does_not_take_the_head(tmp_path: Path) -> None:
    d = new_devnet()
    block_k = next_block(d)  # in turn for period k, on k-1
    attacker = d.committer_for(d.period + 2)
    assert attacker.public_key != block_k.header.committer
    rival = grind_below(d, attacker, d.period + 2, block_k.hash)  # in turn for k+1, also on k-1
    with store_with(tmp_path, d, [block_k]) as store:
        store.import_block(rival, d.env)
        assert store.head == block_k.hash


def test_next_committer_does_not_orphan_an_out_of_turn_block_k(tmp_path: Path) -> None:
    """Block k came late, out of turn (its in-turn committer was offline): k+1's committer
    still cannot replace it by skipping period k, although its own block is in turn."""
    d = new_devnet()
    k = d.period + 1
    attacker = d.committer_for(k + 1)
    stand_in = next(c for c in d.committer_keys if c not in (d.committer_for(k), attacker))
    block_k = next_block(d, out_of_turn=stand_in)
    rival = grind_below(d, attacker, k + 1, block_k.hash)
    with store_with(tmp_path, d, [block_k]) as store:
        store.import_block(rival, d.env)
        assert store.head == block_k.hash


def test_honest_chain_goes_on_after_the_attack(tmp_path: Path) -> None:
    """The k+2 committer extends block k; the attacker's block stays a stub."""
    d = new_devnet()
    block_k = next_block(d)
    rival = grind_below(d, d.committer_for(d.period + 2), d.period + 2, block_k.hash)
    with store_with(tmp_path, d, [block_k]) as store:
        store.import_block(rival, d.env)
        d.commit()  # block k (same bytes: deterministic build) is the devnet's head again
        assert d.blocks[-1].hash == block_k.hash
        after = d.commit(skip=1)  # period k+1 is the attacker's; k+2 is honest
        assert store.import_block(after, d.env).status == "head"
        assert store.head == after.hash


def test_a_skipping_block_weighs_less_than_any_block_that_does_not_skip() -> None:
    params = new_devnet().params
    k = 5
    in_turn_next = params.committers[(k + 1) % len(params.committers)]
    for committer in params.committers:  # whoever signed block k, in turn or not
        assert block_weight(params, k + 1, in_turn_next, skipped=1) < block_weight(params, k, committer)


def test_equal_weight_keeps_the_first_seen_head() -> None:
    """A tie never goes to a value the author controls (its hash): the current head stays."""
    first, ground = ChainTip(10, b"\xff" * 32, 4), ChainTip(10, b"\x00" * 32, 4)
    assert better_tip(first, ground) is first
