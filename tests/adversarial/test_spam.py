"""Finding 5, free spam: zero-fee txs from never-funded keys, and a paid flood.

Before the fix, 4,096 zero-fee ``RegisterDigest`` txs from fresh keys were valid: they filled
a block (``MAX_TXS_PER_BLOCK``), added two permanent records each (an account for the nonce
and a digest) and, ordered by sender key, pushed out a paying transfer. Now every tx pays the
problem's ``min_fee`` (a key that was never funded cannot send at all), and the committer
takes txs by fee per byte within ``MAX_BLOCK_TX_BYTES``.
"""

from __future__ import annotations

import dataclasses

import pytest

from adversary import commit_from_pool, fresh_keys, pool_of, record_count
from chain import constants as C
from chain.builder import make_transaction
from chain.errors import BlockTransactionsTooLarge, FeeTooLow, MinimumFeeMissing
from chain.limits import tx_size
from chain.payloads import RegisterDigest, Transfer
from chain.problem_block import validate_params
from daimon_node.daemon.mempool import Verdict
from factories import account, apply, assert_supply, digest_for, draft_block, new_devnet


def spam_tx(d, keys, index: int, fee: int = 0):
    """A ``RegisterDigest`` from ``keys`` at its next nonce (every one adds a digest record)."""
    return make_transaction(keys, d.chain_id, 0, RegisterDigest(digest_for(f"spam-{index}")), fee)


def test_zero_fee_spam_from_unfunded_keys_is_refused_and_the_paying_transfer_lands():
    d = new_devnet()
    pool = pool_of(d)
    payer, payee = d.improver_keys[0], d.improver_keys[1]
    amount = 12345
    transfer = d.tx(payer, Transfer(payee.address_bytes, amount))
    assert pool.add_tx(transfer, d.state) is Verdict.ACCEPT
    spammers = fresh_keys("spammer", C.MAX_TXS_PER_BLOCK)  # enough to fill a block before the fix
    verdicts = [pool.add_tx(spam_tx(d, k, i), d.state) for i, k in enumerate(spammers)]
    assert set(verdicts) == {Verdict.REJECT}
    assert pool.reasons["tx_FeeTooLow"] == len(spammers)
    records = record_count(d.state)
    before_payer, before_payee = account(d, payer), account(d, payee)
    block = commit_from_pool(d, pool)
    assert block.body.transactions == (transfer,)
    # The honest transfer landed in full; the spam added no record and moved no unit.
    assert account(d, payee).balance == before_payee.balance + amount
    assert account(d, payer).balance == before_payer.balance - amount - d.params.min_fee
    assert record_count(d.state) == records  # payer, payee and committer accounts already existed
    for k in spammers[:16]:
        assert account(d, k).balance == 0 and account(d, k).nonce == 0
    assert_supply(d)


def test_zero_fee_tx_makes_a_block_invalid():
    d = new_devnet()
    tx = spam_tx(d, fresh_keys("spammer", 1)[0], 0)
    with pytest.raises(FeeTooLow) as err:
        apply(d, draft_block(d, transactions=[tx]))
    assert (err.value.fee, err.value.required) == (0, d.params.min_fee)


def test_a_problem_without_a_minimum_fee_is_invalid():
    d = new_devnet()
    with pytest.raises(MinimumFeeMissing):
        validate_params(dataclasses.replace(d.params, min_fee=0))


def test_paying_transfer_outbids_a_funded_flood_within_the_byte_budget():
    """A funded attacker floods the pool with more minimum-fee txs than a block holds; an honest
    transfer paying twice the minimum still lands, and the block stays within its byte budget."""
    d = new_devnet()
    fee = d.params.min_fee
    per_sender = 64  # the pool's per-sender limit (daimon_node.daemon.mempool.MAX_TXS_PER_SENDER)
    probe = spam_tx(d, fresh_keys("flood", 1)[0], 0, fee)
    senders_needed = C.MAX_BLOCK_TX_BYTES // (tx_size(probe) * per_sender) + 2  # more than the budget holds
    flooders = fresh_keys("flood", senders_needed)
    funder = d.improver_keys[3]
    d.commit(transactions=[d.tx(funder, Transfer(k.address_bytes, per_sender * fee)) for k in flooders])
    pool = pool_of(d)
    flood = [make_transaction(k, d.chain_id, n, RegisterDigest(digest_for(f"flood-{i}-{n}")), fee)
             for i, k in enumerate(flooders) for n in range(per_sender)]
    assert sum(tx_size(t) for t in flood) > C.MAX_BLOCK_TX_BYTES
    assert all(pool.add_tx(t, d.state) is Verdict.ACCEPT for t in flood)
    payer, payee = d.improver_keys[0], d.improver_keys[1]
    transfer = d.tx(payer, Transfer(payee.address_bytes, 777), fee=2 * fee)
    assert pool.add_tx(transfer, d.state) is Verdict.ACCEPT
    before_payee = account(d, payee)
    block = commit_from_pool(d, pool)
    txs = block.body.transactions
    assert txs[0] == transfer  # highest fee per byte first
    assert sum(tx_size(t) for t in txs) <= C.MAX_BLOCK_TX_BYTES
    assert len(txs) < len(flood) + 1  # the flood did not all fit
    assert account(d, payee).balance == before_payee.balance + 777
    # Every flood tx that landed paid its fee: the attacker bought block space, nothing else.
    landed = [t for t in txs if t is not transfer]
    spent = sum(per_sender * fee - account(d, k).balance for k in flooders)
    assert spent == fee * len(landed)
    assert_supply(d)


def test_block_over_the_byte_budget_is_invalid():
    d = new_devnet()
    fee = d.params.min_fee
    payer = d.improver_keys[0]
    one = d.tx(payer, Transfer(payer.address_bytes, 0))
    d.nonces.pop(payer.public_key)
    count = C.MAX_BLOCK_TX_BYTES // tx_size(one) + 1
    txs = [make_transaction(payer, d.chain_id, n, Transfer(payer.address_bytes, 0), fee) for n in range(count)]
    with pytest.raises(BlockTransactionsTooLarge) as err:
        apply(d, draft_block(d, transactions=txs))
    assert err.value.size > err.value.limit == C.MAX_BLOCK_TX_BYTES


def test_full_pool_evicts_its_cheapest_tx_per_byte(monkeypatch):
    """A pool full of minimum-fee txs takes a better-paying tx by dropping one of them, and
    refuses one that pays no more (before the fix it dropped the oldest, whatever it paid)."""
    import daimon_node.daemon.mempool as mempool

    capacity = 8  # a small pool: the rule does not depend on the size
    monkeypatch.setattr(mempool, "MAX_TXS", capacity)
    d = new_devnet()
    fee = d.params.min_fee
    funder = d.improver_keys[3]
    flooders = fresh_keys("evict", capacity)
    d.commit(transactions=[d.tx(funder, Transfer(k.address_bytes, 10 * fee)) for k in flooders])
    pool = pool_of(d)
    cheap = [spam_tx(d, k, i, fee) for i, k in enumerate(flooders)]
    assert all(pool.add_tx(t, d.state) is Verdict.ACCEPT for t in cheap)
    payer = d.improver_keys[0]
    same = d.tx(payer, Transfer(d.creator.address_bytes, 1), fee=fee)
    assert tx_size(same) >= tx_size(cheap[0])  # the same fee on a tx at least as large
    assert pool.add_tx(same, d.state) is Verdict.IGNORE  # pays no more per byte than the cheapest
    d.nonces.pop(payer.public_key)
    better = d.tx(payer, Transfer(d.creator.address_bytes, 1), fee=2 * fee)
    assert pool.add_tx(better, d.state) is Verdict.ACCEPT
    assert better.hash in pool.txs and len(pool.txs) == capacity
