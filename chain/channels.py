"""Payment channels between a model's user and a runner (docs/market.md).
"""

from __future__ import annotations

from dataclasses import replace

from .crypto import address_bytes as address_of
from .errors import ChannelNotExpired, InvalidTransaction, NoOpenChannel
from .header import BlockHeader
from .payloads import CloseChannel, OpenChannel, RedeemVoucher
from .records import Channel, ProblemRecord
from .signing import is_valid_signature
from .state import State, burn_locked, credit, get_channel, lock, set_channel, unlock


# --- payment channels (docs/market.md) ---------------------------------------------
def process_open_channel(state: State, payer: bytes, header: BlockHeader, payload: OpenChannel) -> None:
    if payload.runner == payer:
        raise InvalidTransaction("cannot open a channel to oneself")
    if payload.amount == 0:
        raise InvalidTransaction("a channel deposit must be positive")
    if payload.expires_period <= header.period:
        raise InvalidTransaction("channel expiry not in the future", expires=payload.expires_period, period=header.period)
    if not lock(state, payer, payload.amount):
        raise InvalidTransaction("balance below the channel deposit", amount=payload.amount)
    channel = get_channel(state, payer, payload.runner)
    if channel is None:
        channel = Channel(0, 0, 0, 0)
    if channel.is_open:
        channel = Channel(channel.deposit + payload.amount, channel.redeemed,
                          max(channel.expires_period, payload.expires_period), channel.epoch)
    else:
        channel = Channel(payload.amount, 0, payload.expires_period, channel.epoch)
    set_channel(state, payer, payload.runner, channel)


def process_redeem_voucher(state: State, problem: ProblemRecord, runner: bytes, payload: RedeemVoucher) -> None:
    voucher = payload.voucher
    if voucher.chain_id != problem.chain_id:
        raise InvalidTransaction("voucher for another chain", chain_id=voucher.chain_id)
    if voucher.runner != runner:
        raise InvalidTransaction("voucher names another runner", runner=voucher.runner)
    if not is_valid_signature(voucher, problem.chain_id):
        raise InvalidTransaction("bad voucher signature", payer=voucher.payer)
    payer = address_of(voucher.payer)
    channel = get_channel(state, payer, runner)
    if channel is None or not channel.is_open:
        raise InvalidTransaction("no open channel for the voucher", payer=payer)
    if voucher.epoch != channel.epoch:
        raise InvalidTransaction("voucher of a closed channel epoch", epoch=voucher.epoch, current=channel.epoch)
    if voucher.cumulative <= channel.redeemed:
        raise InvalidTransaction("voucher already redeemed", cumulative=voucher.cumulative, redeemed=channel.redeemed)
    if voucher.cumulative > channel.deposit:
        raise InvalidTransaction("voucher exceeds the channel deposit", cumulative=voucher.cumulative,
                                 deposit=channel.deposit)
    amount = voucher.cumulative - channel.redeemed
    if burn_locked(state, payer, amount) != amount:  # the deposit is locked: cannot happen
        raise InvalidTransaction("channel deposit not locked", payer=payer)
    credit(state, runner, amount)
    set_channel(state, payer, runner, replace(channel, redeemed=voucher.cumulative))


def check_close_channel(runner: bytes, channel: Channel | None, period: int) -> None:
    """A channel closes from its ``expires_period`` on: until then the runner may redeem vouchers
    against the deposit, so the payer cannot take it back under a runner it has paid."""
    if channel is None or not channel.is_open:
        raise NoOpenChannel(runner)
    if period < channel.expires_period:
        raise ChannelNotExpired(channel.expires_period, period)


def process_close_channel(state: State, payer: bytes, header: BlockHeader, payload: CloseChannel) -> None:
    channel = get_channel(state, payer, payload.runner)
    check_close_channel(payload.runner, channel, header.period)
    assert channel is not None
    unlock(state, payer, channel.deposit - channel.redeemed)
    set_channel(state, payer, payload.runner, Channel(0, 0, 0, channel.epoch + 1))


