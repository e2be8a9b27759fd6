"""The node's pools: what they accept, ignore and reject, and why (the RPC reply says it)."""

from __future__ import annotations

from chain.consensus import period_start
from chain.devnet import Devnet, DevnetConfig
from chain.state import get_account
from chain.payloads import Transfer
from chain.types import Anchor
from daimon_node.daemon.mempool import Mempool, Verdict


def started() -> Devnet:
    d = Devnet(DevnetConfig())
    d.start()
    d.bond_validators()
    return d


def test_tx_above_balance_rejected_with_reason() -> None:
    d = started()
    pool = Mempool(d.chain_id)
    sender = d.improver_keys[0]
    balance = get_account(d.state, sender.address_bytes).balance
    tx = d.tx(sender, Transfer(d.creator.address_bytes, balance + 1))
    assert pool.add_tx(tx, d.state) is Verdict.REJECT
    assert pool.last_reason == "tx_cost_above_balance"


def test_duplicate_tx_ignored_and_included_tx_pruned() -> None:
    d = started()
    pool = Mempool(d.chain_id)
    tx = d.tx(d.improver_keys[0], Transfer(d.creator.address_bytes, 5))
    assert pool.add_tx(tx, d.state) is Verdict.ACCEPT
    assert pool.add_tx(tx, d.state) is Verdict.IGNORE and pool.last_reason == "already known"
    d.commit(transactions=[tx])
    pool.prune(d.state, period_start(d.params, d.period + 1))
    assert tx.hash not in pool.txs


def test_unexecutable_tx_and_its_successors_dropped() -> None:
    """A pooled tx that can no longer execute must not block the sender's later nonces forever."""
    d = started()
    pool = Mempool(d.chain_id)
    alice, bob = d.improver_keys[0], d.improver_keys[1]
    digest = b"\x07" * 32
    claim = d.register(alice, digest)
    after = d.tx(alice, Transfer(d.creator.address_bytes, 1))
    assert pool.add_tx(claim, d.state) is Verdict.ACCEPT
    assert pool.add_tx(after, d.state) is Verdict.ACCEPT
    d.commit(transactions=[d.tx(bob, claim.payload)])  # bob's copy of alice's claim lands first
    pool.prune(d.state, period_start(d.params, d.period + 1))
    assert claim.hash not in pool.txs and after.hash not in pool.txs


def test_gapped_nonce_waits() -> None:
    d = started()
    pool = Mempool(d.chain_id)
    alice = d.improver_keys[0]
    skipped = d.tx(alice, Transfer(d.creator.address_bytes, 1))
    later = d.tx(alice, Transfer(d.creator.address_bytes, 2))
    assert pool.add_tx(later, d.state) is Verdict.ACCEPT
    pool.prune(d.state, period_start(d.params, d.period + 1))
    assert later.hash in pool.txs  # nonce+1 waits for nonce
    assert pool.add_tx(skipped, d.state) is Verdict.ACCEPT


def test_reveal_only_for_the_anchored_poi_in_the_next_period() -> None:
    d = started()
    keys = d.improver_keys[0]
    labels = d.improving_labels(1)[0]
    digest = b"\x42" * 32
    d.commit(transactions=[d.register(keys, digest)])
    poi, reveal = d.prove(keys, digest, labels)
    pool = Mempool(d.chain_id)
    # Before the anchor: the labels must not leak, so the reveal is not taken.
    assert pool.add_reveal(reveal, d.state, period_start(d.params, d.period + 1)) is Verdict.IGNORE
    d.commit(anchor=Anchor(poi, tuple(d.vote(v, poi, reveal) for v in d.validator_keys)))
    during_anchor_period = period_start(d.params, d.period) + 1
    assert pool.add_reveal(reveal, d.state, during_anchor_period) is Verdict.IGNORE
    next_period = period_start(d.params, d.period + 1) + 1
    assert pool.add_reveal(reveal, d.state, next_period) is Verdict.ACCEPT
