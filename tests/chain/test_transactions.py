"""Transactions inside ``apply_block``: nonce, balance, signature, chain, registrations, bonds."""

from __future__ import annotations

import dataclasses

import pytest

from chain.builder import make_transaction
from chain.crypto import KeyPair
from chain.errors import BondStillUnbonding, InvalidTransaction, ModelClaimTaken, NoBondToWithdraw, ValidatorAlreadyBonded
from chain.state import get_bond, get_digest, get_meta, get_offer, get_reputation
from chain.payloads import OfferService, Rate, RegisterDigest, RegisterValidator, Transfer, WithdrawBond
from chain.proofs import model_claim
from factories import (
    OTHER_CHAIN,
    account,
    accept,
    apply,
    assert_supply,
    digest_for,
    draft_block,
    flip,
    next_block,
)

PAUPER = KeyPair.from_label("pauper")  # holds nothing


def _run_tx(d, tx):
    """Apply a block holding ``tx`` and make it the head."""
    return accept(d, next_block(d, transactions=[tx]))


def _tx(d, keys, payload, *, nonce=None, fee=None, chain_id=None):
    """A tx paying ``fee``, or (None) the problem's minimum fee."""
    if nonce is None:
        return d.tx(keys, payload, fee)
    return make_transaction(keys, chain_id or d.chain_id, nonce, payload, d.params.min_fee if fee is None else fee)


# ---------------------------------------------------------------------------
# Valid transactions
# ---------------------------------------------------------------------------
def test_transfer_moves_funds_and_pays_the_fee_to_the_committer(devnet):
    sender, receiver = devnet.improver_keys[0], devnet.improver_keys[1]
    before_s, before_r = account(devnet, sender), account(devnet, receiver)
    block = next_block(devnet, transactions=[_tx(devnet, sender, Transfer(receiver.address_bytes, 700), fee=11)])
    committer = next(k for k in devnet.committer_keys if k.public_key == block.header.committer)
    before_c = account(devnet, committer)
    accept(devnet, block)
    assert account(devnet, sender).balance == before_s.balance - 711
    assert account(devnet, sender).nonce == before_s.nonce + 1
    assert account(devnet, receiver).balance == before_r.balance + 700
    assert account(devnet, committer).balance == before_c.balance + 11
    assert devnet.receipts[-1].fees == 11
    assert_supply(devnet)


def test_transfer_to_a_new_address(devnet):
    _run_tx(devnet, _tx(devnet, devnet.improver_keys[0], Transfer(PAUPER.address_bytes, 3)))
    assert account(devnet, PAUPER).balance == 3


def test_several_txs_of_one_sender_in_order(devnet):
    keys = devnet.improver_keys[0]
    txs = [_tx(devnet, keys, Transfer(PAUPER.address_bytes, 1), fee=1) for _ in range(3)]
    accept(devnet, next_block(devnet, transactions=txs))
    assert account(devnet, PAUPER).balance == 3
    assert account(devnet, keys).nonce == 3


def test_offer_and_rate(devnet):
    keys, rater = devnet.improver_keys[0], devnet.improver_keys[1]
    offer = OfferService(5, b"peer-id", digest_for("m"))
    accept(devnet, next_block(devnet, transactions=[
        _tx(devnet, keys, offer), _tx(devnet, rater, Rate(keys.address_bytes, 1))]))
    assert get_offer(devnet.state, keys.address_bytes).offer == offer
    assert get_reputation(devnet.state, keys.address_bytes).score == 1
    _run_tx(devnet, _tx(devnet, rater, Rate(keys.address_bytes, -1)))  # a new period: may rate again
    rep = get_reputation(devnet.state, keys.address_bytes)
    assert (rep.score, rep.up, rep.down) == (0, 1, 1)


# ---------------------------------------------------------------------------
# Invalid transactions: each breaks one field of a valid one
# ---------------------------------------------------------------------------
def test_invalid_nonce_ahead(devnet):
    keys = devnet.improver_keys[0]
    nonce = account(devnet, keys).nonce
    tx = _tx(devnet, keys, Transfer(PAUPER.address_bytes, 1), nonce=nonce + 1)  # invalid nonce
    with pytest.raises(InvalidTransaction, match="wrong nonce"):
        apply(devnet, draft_block(devnet, transactions=[tx]))


def test_invalid_nonce_replayed(devnet):
    keys = devnet.improver_keys[0]
    tx = _tx(devnet, keys, Transfer(PAUPER.address_bytes, 1))
    _run_tx(devnet, tx)
    # invalid nonce: the same signed tx again
    with pytest.raises(InvalidTransaction, match="wrong nonce"):
        apply(devnet, draft_block(devnet, transactions=[tx]))


def test_invalid_nonce_repeated_in_one_block(devnet):
    keys = devnet.improver_keys[0]
    tx = _tx(devnet, keys, Transfer(PAUPER.address_bytes, 1))
    # invalid nonce: the second copy of a tx in one block
    with pytest.raises(InvalidTransaction, match="tx 1: wrong nonce"):
        apply(devnet, draft_block(devnet, transactions=[tx, tx]))


def test_invalid_balance_below_fee(devnet):
    tx = _tx(devnet, PAUPER, Transfer(devnet.improver_keys[0].address_bytes, 0), nonce=0, fee=1)  # invalid fee
    with pytest.raises(InvalidTransaction, match="balance below fee"):
        apply(devnet, draft_block(devnet, transactions=[tx]))


def test_invalid_balance_below_amount(devnet):
    keys = devnet.improver_keys[0]
    balance = account(devnet, keys).balance
    tx = _tx(devnet, keys, Transfer(PAUPER.address_bytes, balance + 1))  # invalid amount
    with pytest.raises(InvalidTransaction, match="balance below amount"):
        apply(devnet, draft_block(devnet, transactions=[tx]))


def test_invalid_balance_below_amount_plus_fee(devnet):
    keys = devnet.improver_keys[0]
    balance = account(devnet, keys).balance
    # invalid amount: exactly the balance, but the fee is taken first
    tx = _tx(devnet, keys, Transfer(PAUPER.address_bytes, balance), fee=1)
    with pytest.raises(InvalidTransaction, match="balance below amount"):
        apply(devnet, draft_block(devnet, transactions=[tx]))


def test_whole_balance_transfer_is_valid(devnet):
    keys = devnet.improver_keys[0]
    balance = account(devnet, keys).balance
    _run_tx(devnet, _tx(devnet, keys, Transfer(PAUPER.address_bytes, balance - 1), fee=1))
    assert account(devnet, keys).balance == 0


def test_invalid_locked_funds_are_not_spendable(devnet):
    validator = devnet.validator_keys[0]
    acct = account(devnet, validator)
    assert acct.locked == devnet.params.validator_bond
    # invalid amount: spendable plus one, which only the locked bond could cover
    tx = _tx(devnet, validator, Transfer(PAUPER.address_bytes, acct.balance + 1))
    with pytest.raises(InvalidTransaction, match="balance below amount"):
        apply(devnet, draft_block(devnet, transactions=[tx]))


def test_invalid_tx_signature(devnet):
    tx = _tx(devnet, devnet.improver_keys[0], Transfer(PAUPER.address_bytes, 1))
    tx = dataclasses.replace(tx, signature=flip(tx.signature))  # invalid signature
    with pytest.raises(InvalidTransaction, match="bad tx signature"):
        apply(devnet, draft_block(devnet, transactions=[tx]))


def test_invalid_tx_signed_by_another_key(devnet):
    tx = _tx(devnet, devnet.improver_keys[0], Transfer(PAUPER.address_bytes, 1))
    # invalid sender: the signature is the improver's, the sender field another key
    tx = dataclasses.replace(tx, sender=devnet.improver_keys[1].public_key)
    with pytest.raises(InvalidTransaction, match="bad tx signature"):
        apply(devnet, draft_block(devnet, transactions=[tx]))


def test_invalid_tx_for_another_chain(devnet):
    keys = devnet.improver_keys[0]
    nonce = account(devnet, keys).nonce
    # invalid chain id (validly signed for that other chain)
    tx = _tx(devnet, keys, Transfer(PAUPER.address_bytes, 1), nonce=nonce, chain_id=OTHER_CHAIN)
    with pytest.raises(InvalidTransaction, match="tx for another chain"):
        apply(devnet, draft_block(devnet, transactions=[tx]))


def test_invalid_tx_signed_for_another_chain(devnet):
    keys = devnet.improver_keys[0]
    nonce = account(devnet, keys).nonce
    tx = _tx(devnet, keys, Transfer(PAUPER.address_bytes, 1), nonce=nonce, chain_id=OTHER_CHAIN)
    # invalid signature: the chain id field says this chain, the signature covers the other one
    tx = dataclasses.replace(tx, chain_id=devnet.chain_id)
    with pytest.raises(InvalidTransaction, match="bad tx signature"):
        apply(devnet, draft_block(devnet, transactions=[tx]))


def test_invalid_tx_makes_the_whole_block_invalid(devnet):
    keys = devnet.improver_keys[0]
    good = _tx(devnet, keys, Transfer(PAUPER.address_bytes, 1))
    bad = _tx(devnet, PAUPER, Transfer(keys.address_bytes, 5), nonce=0)  # invalid: pauper has 1 after `good`
    with pytest.raises(InvalidTransaction, match="tx 1: balance below amount"):
        apply(devnet, draft_block(devnet, transactions=[good, bad]))


# ---------------------------------------------------------------------------
# Digest registration
# ---------------------------------------------------------------------------
def _claim(keys, tag):
    return RegisterDigest(model_claim(keys.public_key, digest_for(tag)))


def test_register_digest_records_the_claim_and_height(devnet):
    keys = devnet.improver_keys[0]
    block = _run_tx(devnet, _tx(devnet, keys, _claim(keys, "a")))
    record = get_digest(devnet.state, model_claim(keys.public_key, digest_for("a")))
    assert record.owner == keys.address_bytes
    assert record.height == block.header.height


def test_two_provers_claim_one_digest_independently(devnet):
    """A claim binds its prover: another prover's claim on the same model is another record."""
    a, b = devnet.improver_keys[0], devnet.improver_keys[1]
    _run_tx(devnet, _tx(devnet, a, _claim(a, "a")))
    _run_tx(devnet, _tx(devnet, b, _claim(b, "a")))
    assert get_digest(devnet.state, model_claim(b.public_key, digest_for("a"))).owner == b.address_bytes


def test_invalid_double_claim_registration(devnet):
    a, b = devnet.improver_keys[0], devnet.improver_keys[1]
    _run_tx(devnet, _tx(devnet, a, _claim(a, "a")))
    tx = _tx(devnet, b, _claim(a, "a"))  # invalid: a copy of a's claim, already on chain
    with pytest.raises(ModelClaimTaken, match="model claim already registered"):
        apply(devnet, draft_block(devnet, transactions=[tx]))


def test_invalid_double_claim_registration_in_one_block(devnet):
    a = devnet.improver_keys[0]
    first, second = _tx(devnet, a, _claim(a, "a")), _tx(devnet, a, _claim(a, "a"))  # invalid: same claim
    with pytest.raises(ModelClaimTaken, match="tx 1: model claim already registered"):
        apply(devnet, draft_block(devnet, transactions=[first, second]))


# ---------------------------------------------------------------------------
# Validator bonds
# ---------------------------------------------------------------------------
def test_bond_locks_the_validator_bond(devnet):
    keys = devnet.improver_keys[0]
    before = account(devnet, keys)
    block = _run_tx(devnet, _tx(devnet, keys, RegisterValidator()))
    after = account(devnet, keys)
    assert after.balance == before.balance - devnet.params.validator_bond - devnet.params.min_fee
    assert after.locked == before.locked + devnet.params.validator_bond
    bond = get_bond(devnet.state, keys.public_key)
    assert (bond.amount, bond.since_height, bond.unbond_period) == (devnet.params.validator_bond,
                                                                     block.header.height, 0)
    assert_supply(devnet)


def test_invalid_double_bond(devnet):
    # invalid: the validator is already bonded (bonded in the fixture)
    tx = _tx(devnet, devnet.validator_keys[0], RegisterValidator())
    with pytest.raises(ValidatorAlreadyBonded):
        apply(devnet, draft_block(devnet, transactions=[tx]))


def test_invalid_double_bond_in_one_block(devnet):
    keys = devnet.improver_keys[0]
    txs = [_tx(devnet, keys, RegisterValidator()), _tx(devnet, keys, RegisterValidator())]  # invalid: twice
    with pytest.raises(ValidatorAlreadyBonded) as caught:
        apply(devnet, draft_block(devnet, transactions=txs))
    assert caught.value.values["tx_index"] == 1


def test_invalid_bond_without_funds(devnet):
    keys = devnet.improver_keys[0]
    balance = account(devnet, keys).balance
    spend = balance - devnet.params.validator_bond + 1
    txs = [_tx(devnet, keys, Transfer(PAUPER.address_bytes, spend)),
           _tx(devnet, keys, RegisterValidator())]  # invalid: one base unit short of the bond
    with pytest.raises(InvalidTransaction, match="tx 1: balance below the validator bond"):
        apply(devnet, draft_block(devnet, transactions=txs))


def test_withdraw_bond_after_the_unbonding_delay(devnet):
    keys = devnet.validator_keys[0]
    before = account(devnet, keys)
    block = _run_tx(devnet, _tx(devnet, keys, WithdrawBond()))
    until = block.header.period + devnet.params.unbonding_periods
    assert get_bond(devnet.state, keys.public_key).unbond_period == until
    fee = devnet.params.min_fee
    assert account(devnet, keys) == dataclasses.replace(before, balance=before.balance - fee,
                                                        nonce=before.nonce + 1)  # still locked
    # the second withdraw, in the first period the bond is free
    accept(devnet, next_block(devnet, transactions=[_tx(devnet, keys, WithdrawBond())],
                              skip=until - devnet.period - 1))
    assert devnet.period == until
    after = account(devnet, keys)
    assert get_bond(devnet.state, keys.public_key) is None
    assert after.balance == before.balance + devnet.params.validator_bond - 2 * fee
    assert after.locked == before.locked - devnet.params.validator_bond
    assert_supply(devnet)


def test_invalid_withdraw_while_unbonding(devnet):
    keys = devnet.validator_keys[0]
    block = _run_tx(devnet, _tx(devnet, keys, WithdrawBond()))
    until = block.header.period + devnet.params.unbonding_periods
    tx = _tx(devnet, keys, WithdrawBond())
    # invalid: the last period before the bond is free
    with pytest.raises(BondStillUnbonding) as caught:
        apply(devnet, draft_block(devnet, transactions=[tx], skip=until - devnet.period - 2))
    assert (caught.value.until_period, caught.value.period) == (until, until - 1)


def test_invalid_withdraw_without_bond(devnet):
    tx = _tx(devnet, devnet.improver_keys[0], WithdrawBond())  # invalid: never bonded
    with pytest.raises(NoBondToWithdraw):
        apply(devnet, draft_block(devnet, transactions=[tx]))


def test_invalid_withdraw_twice_after_release(devnet):
    keys = devnet.validator_keys[0]
    block = _run_tx(devnet, _tx(devnet, keys, WithdrawBond()))
    until = block.header.period + devnet.params.unbonding_periods
    accept(devnet, next_block(devnet, transactions=[_tx(devnet, keys, WithdrawBond())],
                              skip=until - devnet.period - 1))
    tx = _tx(devnet, keys, WithdrawBond())  # invalid: the bond was already returned
    with pytest.raises(NoBondToWithdraw):
        apply(devnet, draft_block(devnet, transactions=[tx]))


# ---------------------------------------------------------------------------
# Ratings
# ---------------------------------------------------------------------------
def test_invalid_rate_oneself(devnet):
    keys = devnet.improver_keys[0]
    tx = _tx(devnet, keys, Rate(keys.address_bytes, 1))  # invalid target: the rater
    with pytest.raises(InvalidTransaction, match="cannot rate oneself"):
        apply(devnet, draft_block(devnet, transactions=[tx]))


def test_invalid_rate_twice_in_a_period(devnet):
    keys, target = devnet.improver_keys[0], devnet.improver_keys[1].address_bytes
    txs = [_tx(devnet, keys, Rate(target, 1)), _tx(devnet, keys, Rate(target, -1))]  # invalid: second rating
    with pytest.raises(InvalidTransaction, match="tx 1: already rated this target this period"):
        apply(devnet, draft_block(devnet, transactions=txs))


def test_invalid_rate_by_a_non_holder(devnet):
    fee = devnet.params.min_fee
    _run_tx(devnet, _tx(devnet, devnet.improver_keys[1], Transfer(PAUPER.address_bytes, fee)))
    # invalid rater: holds exactly the fee, so it holds nothing once the fee is paid
    tx = _tx(devnet, PAUPER, Rate(devnet.improver_keys[0].address_bytes, 1), nonce=0)
    with pytest.raises(InvalidTransaction, match="only holders may rate"):
        apply(devnet, draft_block(devnet, transactions=[tx]))


def test_fees_of_a_block_add_up(devnet):
    txs = [_tx(devnet, k, Transfer(PAUPER.address_bytes, 1), fee=10 + i)
           for i, k in enumerate(devnet.improver_keys)]
    block = next_block(devnet, transactions=txs)
    committer = next(k for k in devnet.committer_keys if k.public_key == block.header.committer)
    before = account(devnet, committer).balance
    accept(devnet, block)
    assert account(devnet, committer).balance == before + sum(10 + i for i in range(4))
    assert get_meta(devnet.state).minted == 0
    assert_supply(devnet)
