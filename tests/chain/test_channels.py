"""Payment channels (docs/market.md): open, redeem vouchers, close; every invalid case.

A payer locks a deposit for one runner (``OpenChannel``); it signs vouchers with a
cumulative amount off chain; the runner redeems the highest in ``RedeemVoucher``
and is paid ``cumulative - redeemed``; after expiry the payer takes the rest back.
"""

from __future__ import annotations

import dataclasses

import pytest

from chain.crypto import KeyPair
from chain.errors import ChannelNotExpired, InvalidTransaction, NoOpenChannel
from chain.signing import EMPTY_SIGNATURE, sign
from chain.state import get_channel
from chain.payloads import CloseChannel, OpenChannel, RedeemVoucher, Transfer, Voucher
from factories import OTHER_CHAIN, account, accept, apply, assert_supply, draft_block, flip, next_block

PAUPER = KeyPair.from_label("channel-pauper")


def _payer_runner(d):
    return d.improver_keys[0], d.improver_keys[1]


def voucher(d, payer: KeyPair, runner: KeyPair, cumulative: int, *, epoch: int = 0, chain_id=None) -> Voucher:
    chain_id = chain_id or d.chain_id
    unsigned = Voucher(chain_id, runner.address_bytes, epoch, cumulative, payer.public_key, EMPTY_SIGNATURE)
    return sign(unsigned, payer, chain_id)


def _run(d, *txs):
    return accept(d, next_block(d, transactions=list(txs)))


def _open(d, payer, runner, amount=100, expires_in=3):
    _run(d, d.tx(payer, OpenChannel(runner.address_bytes, amount, d.period + 1 + expires_in)))


# --- valid flows ---------------------------------------------------------------------
def test_open_locks_the_deposit(devnet):
    payer, runner = _payer_runner(devnet)
    before = account(devnet, payer)
    _open(devnet, payer, runner, 100)
    after = account(devnet, payer)
    fee = devnet.params.min_fee
    assert (after.balance, after.locked) == (before.balance - 100 - fee, before.locked + 100)
    ch = get_channel(devnet.state, payer.address_bytes, runner.address_bytes)
    assert (ch.deposit, ch.redeemed, ch.epoch) == (100, 0, 0)
    assert_supply(devnet)


def test_redeem_pays_the_runner_the_difference_exactly_once(devnet):
    payer, runner = _payer_runner(devnet)
    _open(devnet, payer, runner, 100)
    r0, p0 = account(devnet, runner), account(devnet, payer)
    _run(devnet, devnet.tx(runner, RedeemVoucher(voucher(devnet, payer, runner, 30))))
    fee = devnet.params.min_fee  # the runner pays it on each redeem
    assert account(devnet, runner).balance == r0.balance + 30 - fee
    assert account(devnet, payer).locked == p0.locked - 30
    _run(devnet, devnet.tx(runner, RedeemVoucher(voucher(devnet, payer, runner, 45))))
    assert account(devnet, runner).balance == r0.balance + 45 - 2 * fee  # paid 15 more, not 45
    assert get_channel(devnet.state, payer.address_bytes, runner.address_bytes).redeemed == 45
    assert_supply(devnet)


def test_top_up_adds_to_the_deposit_and_extends_expiry(devnet):
    payer, runner = _payer_runner(devnet)
    _open(devnet, payer, runner, 100, expires_in=2)
    _open(devnet, payer, runner, 50, expires_in=9)
    ch = get_channel(devnet.state, payer.address_bytes, runner.address_bytes)
    assert ch.deposit == 150 and ch.expires_period == devnet.period + 9


def test_close_after_expiry_refunds_and_bumps_the_epoch(devnet):
    payer, runner = _payer_runner(devnet)
    _open(devnet, payer, runner, 100, expires_in=1)
    _run(devnet, devnet.tx(runner, RedeemVoucher(voucher(devnet, payer, runner, 40))))
    before = account(devnet, payer)
    _run(devnet, devnet.tx(payer, CloseChannel(runner.address_bytes)))
    after = account(devnet, payer)
    assert (after.balance, after.locked) == (before.balance + 60 - devnet.params.min_fee, before.locked - 60)
    ch = get_channel(devnet.state, payer.address_bytes, runner.address_bytes)
    assert (ch.deposit, ch.redeemed, ch.epoch, ch.is_open) == (0, 0, 1, False)
    _open(devnet, payer, runner, 20)  # reopening keeps the new epoch
    assert get_channel(devnet.state, payer.address_bytes, runner.address_bytes).epoch == 1
    assert_supply(devnet)


# --- invalid: each breaks one thing of a valid tx ------------------------------------
def _rejects(d, tx, match):
    with pytest.raises(InvalidTransaction, match=match):
        apply(d, draft_block(d, transactions=[tx]))


def test_invalid_open_above_balance(devnet):
    payer, runner = _payer_runner(devnet)
    amount = account(devnet, payer).balance + 1  # invalid: more than spendable
    _rejects(devnet, devnet.tx(payer, OpenChannel(runner.address_bytes, amount, devnet.period + 5)),
             "balance below the channel deposit")


def test_invalid_open_zero_deposit(devnet):
    payer, runner = _payer_runner(devnet)
    _rejects(devnet, devnet.tx(payer, OpenChannel(runner.address_bytes, 0, devnet.period + 5)), "must be positive")


def test_invalid_open_expiry_in_the_past(devnet):
    payer, runner = _payer_runner(devnet)
    _rejects(devnet, devnet.tx(payer, OpenChannel(runner.address_bytes, 5, devnet.period + 1)),
             "expiry not in the future")


def test_invalid_open_to_oneself(devnet):
    payer, _ = _payer_runner(devnet)
    _rejects(devnet, devnet.tx(payer, OpenChannel(payer.address_bytes, 5, devnet.period + 5)), "oneself")


def test_invalid_redeem_replayed_voucher(devnet):
    payer, runner = _payer_runner(devnet)
    _open(devnet, payer, runner, 100)
    v = voucher(devnet, payer, runner, 30)
    _run(devnet, devnet.tx(runner, RedeemVoucher(v)))
    _rejects(devnet, devnet.tx(runner, RedeemVoucher(v)), "already redeemed")  # invalid: the same voucher again


def test_invalid_redeem_lower_voucher_after_a_higher_one(devnet):
    payer, runner = _payer_runner(devnet)
    _open(devnet, payer, runner, 100)
    _run(devnet, devnet.tx(runner, RedeemVoucher(voucher(devnet, payer, runner, 30))))
    _rejects(devnet, devnet.tx(runner, RedeemVoucher(voucher(devnet, payer, runner, 20))), "already redeemed")


def test_invalid_redeem_same_voucher_twice_in_one_block(devnet):
    payer, runner = _payer_runner(devnet)
    _open(devnet, payer, runner, 100)
    v = voucher(devnet, payer, runner, 30)
    with pytest.raises(InvalidTransaction, match="tx 1: voucher already redeemed"):
        apply(devnet, draft_block(devnet, transactions=[devnet.tx(runner, RedeemVoucher(v)),
                                                        devnet.tx(runner, RedeemVoucher(v))]))


def test_invalid_redeem_overspent_voucher(devnet):
    payer, runner = _payer_runner(devnet)
    _open(devnet, payer, runner, 100)
    _rejects(devnet, devnet.tx(runner, RedeemVoucher(voucher(devnet, payer, runner, 101))),
             "exceeds the channel deposit")


def test_invalid_redeem_forged_voucher(devnet):
    payer, runner = _payer_runner(devnet)
    _open(devnet, payer, runner, 100)
    v = voucher(devnet, payer, runner, 10)
    forged = dataclasses.replace(v, cumulative=90)  # invalid: amount changed after signing
    _rejects(devnet, devnet.tx(runner, RedeemVoucher(forged)), "bad voucher signature")


def test_invalid_redeem_voucher_with_flipped_signature(devnet):
    payer, runner = _payer_runner(devnet)
    _open(devnet, payer, runner, 100)
    v = voucher(devnet, payer, runner, 10)
    _rejects(devnet, devnet.tx(runner, RedeemVoucher(dataclasses.replace(v, signature=flip(v.signature)))),
             "bad voucher signature")


def test_invalid_redeem_voucher_signed_by_a_stranger(devnet):
    payer, runner = _payer_runner(devnet)
    _open(devnet, payer, runner, 100)
    # invalid: signed by someone with no channel to the runner
    _rejects(devnet, devnet.tx(runner, RedeemVoucher(voucher(devnet, PAUPER, runner, 10))), "no open channel")


def test_invalid_redeem_by_another_runner(devnet):
    payer, runner = _payer_runner(devnet)
    thief = devnet.improver_keys[2] if len(devnet.improver_keys) > 2 else devnet.validator_keys[0]
    _open(devnet, payer, runner, 100)
    _rejects(devnet, devnet.tx(thief, RedeemVoucher(voucher(devnet, payer, runner, 10))), "names another runner")


def test_invalid_redeem_voucher_for_another_chain(devnet):
    payer, runner = _payer_runner(devnet)
    _open(devnet, payer, runner, 100)
    _rejects(devnet, devnet.tx(runner, RedeemVoucher(voucher(devnet, payer, runner, 10, chain_id=OTHER_CHAIN))),
             "voucher for another chain")


def test_invalid_redeem_old_epoch_voucher_after_reopen(devnet):
    payer, runner = _payer_runner(devnet)
    _open(devnet, payer, runner, 100, expires_in=1)
    old = voucher(devnet, payer, runner, 50)  # never redeemed
    _run(devnet, devnet.tx(payer, CloseChannel(runner.address_bytes)))
    _open(devnet, payer, runner, 100)
    _rejects(devnet, devnet.tx(runner, RedeemVoucher(old)), "closed channel epoch")


def test_invalid_redeem_after_close(devnet):
    payer, runner = _payer_runner(devnet)
    _open(devnet, payer, runner, 100, expires_in=1)
    v = voucher(devnet, payer, runner, 50)
    _run(devnet, devnet.tx(payer, CloseChannel(runner.address_bytes)))
    _rejects(devnet, devnet.tx(runner, RedeemVoucher(v)), "no open channel")


def test_invalid_close_before_expiry(devnet):
    payer, runner = _payer_runner(devnet)
    _open(devnet, payer, runner, 100, expires_in=5)
    expires = get_channel(devnet.state, payer.address_bytes, runner.address_bytes).expires_period
    with pytest.raises(ChannelNotExpired) as caught:
        apply(devnet, draft_block(devnet, transactions=[devnet.tx(payer, CloseChannel(runner.address_bytes))]))
    assert caught.value.expires_period == expires and caught.value.period < expires


def test_invalid_close_without_channel(devnet):
    payer, runner = _payer_runner(devnet)
    with pytest.raises(NoOpenChannel):
        apply(devnet, draft_block(devnet, transactions=[devnet.tx(payer, CloseChannel(runner.address_bytes))]))


def test_deposit_is_not_spendable(devnet):
    payer, runner = _payer_runner(devnet)
    balance = account(devnet, payer).balance - 2 * devnet.params.min_fee  # all but this tx's and the next's fee
    _open(devnet, payer, runner, balance)
    _rejects(devnet, devnet.tx(payer, Transfer(runner.address_bytes, 1)), "balance below amount")
