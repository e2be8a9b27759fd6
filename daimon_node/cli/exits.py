"""``daimon-node validator bond|unbond|withdraw`` and ``daimon-node channel open|close``: the ways
into and out of locked funds, and the lines ``status`` prints about them.

Each command reads the bond or channel over JSON-RPC (``daimon_getBond``,
``daimon_getChannel``), runs the chain's own rule on it (``check_may_bond``,
``check_withdraw_bond`` in ``chain.bonds``, ``check_close_channel`` in ``chain.channels``) against the
clock's current period, and only then signs and sends the transaction with
``daimon_sendRawTransaction``: a withdrawal that the chain would refuse is one clear line
here, never a fee spent on a transaction no block includes. Every transaction pays the
problem's minimum fee unless ``--fee`` says otherwise.
"""

from __future__ import annotations

from typing import Any

import typer

from chain.errors import BondStillUnbonding, ChannelNotExpired, NoBondToWithdraw, NoOpenChannel, ValidatorAlreadyBonded

from daimon_node.cli.chain import ChainCommandError, hex0x, parse_address, parse_amount
from daimon_node.cli.txcommand import TxOptions, open_tx, tx_command
from daimon_node.rpc.client import RpcClient

validator_app = typer.Typer(help="Bond as a validator, unbond, and withdraw the bond.", no_args_is_help=True)
channel_app = typer.Typer(help="Open and close payment channels to model runners (docs/market.md).",
                          no_args_is_help=True)


def current_period(client: RpcClient, chain: bytes) -> int:
    return int(client.period(chain)["period"])


def fetch_bond(client: RpcClient, chain: bytes, validator: bytes) -> Any:
    """The chain's ``Bond`` record of ``validator`` (rebuilt from ``daimon_getBond``), or None."""
    from chain.records import Bond

    info = client.get_bond(chain, validator)
    if info is None:
        return None
    return Bond(int(info["amount"]), int(info["since_height"]), int(info["unbond_period"]))


def fetch_channel(client: RpcClient, chain: bytes, payer: bytes, runner: bytes) -> Any:
    """The chain's ``Channel`` record from ``payer`` to ``runner`` (from ``daimon_getChannel``), or None."""
    from chain.records import Channel

    info = client.get_channel(chain, payer, runner)
    if info is None:
        return None
    return Channel(int(info["deposit"]), int(info["redeemed"]), int(info["expires_period"]), int(info["epoch"]))


# --- validator ------------------------------------------------------------------------------
@validator_app.command("bond")
@tx_command
def bond_cmd(opts: TxOptions) -> None:
    """Lock the problem's validator bond (RegisterValidator); votes count from the next block on."""
    from chain.bonds import check_may_bond
    from chain.payloads import RegisterValidator

    with open_tx(opts) as tx:
        bond = fetch_bond(tx.client, tx.chain_id, tx.keys.public_key)
        try:
            check_may_bond(tx.keys.public_key, bond)
        except ValidatorAlreadyBonded:
            state = "active" if bond.unbond_period == 0 else f"unbonding until period {bond.unbond_period}"
            raise ChainCommandError(f"key {tx.keys.public_key.hex()[:16]} already has a bond ({state})") from None
        amount = int(tx.params["validator_bond"])
        tx.check_can_pay(amount + tx.fee, "bond + fee")
        tx.report(tx.send(RegisterValidator()), "register_validator", bond=str(amount))


@validator_app.command("unbond")
@tx_command
def unbond_cmd(opts: TxOptions) -> None:
    """Start unbonding (the first WithdrawBond): the bond stops voting now and can be withdrawn the
    problem's unbonding periods after the period of the block that includes it."""
    from chain.payloads import WithdrawBond

    with open_tx(opts) as tx:
        bond = fetch_bond(tx.client, tx.chain_id, tx.keys.public_key)
        if bond is None:
            raise ChainCommandError(f"nothing to unbond: key {tx.keys.public_key.hex()[:16]} has no bond on this chain")
        if bond.unbond_period != 0:
            raise ChainCommandError(f"already unbonding until period {bond.unbond_period}; "
                                    "'daimon-node validator withdraw' from then")
        tx.check_can_pay(tx.fee, "the fee")
        sent = tx.send(WithdrawBond())
        after = fetch_bond(tx.client, tx.chain_id, tx.keys.public_key) if sent.included else None
        until = after.unbond_period if after is not None else None
        tx.report(sent, "unbond", bond=str(bond.amount), withdrawable_from=until)
    if not opts.as_json and until is not None:
        typer.echo(f"unbonding: 'daimon-node validator withdraw' returns the bond from period {until}")


@validator_app.command("withdraw")
@tx_command
def withdraw_cmd(opts: TxOptions) -> None:
    """Take back an unbonded bond (the WithdrawBond after unbonding ends); it becomes spendable."""
    from chain.bonds import check_withdraw_bond
    from chain.payloads import WithdrawBond

    with open_tx(opts) as tx:
        bond = fetch_bond(tx.client, tx.chain_id, tx.keys.public_key)
        period = current_period(tx.client, tx.chain_id)
        try:
            check_withdraw_bond(tx.keys.public_key, bond, period)
        except NoBondToWithdraw:
            raise ChainCommandError(f"nothing to withdraw: key {tx.keys.public_key.hex()[:16]} has no bond on this "
                                    "chain") from None
        except BondStillUnbonding as exc:
            raise ChainCommandError(f"still unbonding until period {exc.until_period} (now period {exc.period})") \
                from None
        if bond.unbond_period == 0:
            raise ChainCommandError("the bond is active: 'daimon-node validator unbond' first, then withdraw "
                                    f"{tx.params['unbonding_periods']} periods later")
        tx.check_can_pay(tx.fee, "the fee")
        tx.report(tx.send(WithdrawBond()), "withdraw_bond", amount=str(bond.amount))


# --- channels -------------------------------------------------------------------------------
RunnerOption = typer.Option(..., "--runner", help="The runner's address (40 hex digits).")


@channel_app.command("open")
@tx_command
def channel_open_cmd(
    opts: TxOptions,
    runner: str = RunnerOption,
    amount: str = typer.Option(..., "--amount", help="Deposit in base units (with --tokens: a decimal token amount)."),
    periods: int = typer.Option(100, "--periods", help="The channel can be closed this many periods from now on."),
    tokens: bool = typer.Option(False, "--tokens", help="--amount is a decimal token amount."),
) -> None:
    """Lock a deposit for one runner (OpenChannel), or top up an open channel (the later expiry holds)."""
    from chain.payloads import OpenChannel

    runner_addr = parse_address(runner, "--runner")
    if periods < 1:
        raise ChainCommandError(f"--periods {periods} must be at least 1")
    with open_tx(opts) as tx:
        if runner_addr == tx.keys.address_bytes:
            raise ChainCommandError("a channel to yourself pays nobody")
        units = parse_amount(amount, tokens=tokens, decimals=int(tx.params["decimals"]), what="--amount")
        if units == 0:
            raise ChainCommandError("--amount must be positive")
        tx.check_can_pay(units + tx.fee, "deposit + fee")
        expires = current_period(tx.client, tx.chain_id) + periods
        tx.report(tx.send(OpenChannel(runner_addr, units, expires)), "open_channel", runner=hex0x(runner_addr),
                  deposit=str(units), expires_period=expires)


@channel_app.command("close")
@tx_command
def channel_close_cmd(opts: TxOptions, runner: str = RunnerOption) -> None:
    """Close an expired channel (CloseChannel): what the runner has not redeemed comes back spendable."""
    from chain.channels import check_close_channel
    from chain.payloads import CloseChannel

    runner_addr = parse_address(runner, "--runner")
    with open_tx(opts) as tx:
        channel = fetch_channel(tx.client, tx.chain_id, tx.keys.address_bytes, runner_addr)
        period = current_period(tx.client, tx.chain_id)
        try:
            check_close_channel(runner_addr, channel, period)
        except NoOpenChannel:
            raise ChainCommandError(f"no open channel from 0x{tx.keys.address_bytes.hex()} to "
                                    f"{hex0x(runner_addr)}") from None
        except ChannelNotExpired as exc:
            raise ChainCommandError(f"channel not expired until period {exc.expires_period} (now period "
                                    f"{exc.period}); the runner may still redeem vouchers until then") from None
        tx.check_can_pay(tx.fee, "the fee")
        tx.report(tx.send(CloseChannel(runner_addr)), "close_channel", runner=hex0x(runner_addr),
                  refund=str(channel.deposit - channel.redeemed))


__all__ = ["validator_app", "channel_app"]
