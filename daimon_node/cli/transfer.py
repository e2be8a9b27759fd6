"""``daimon-node tx transfer`` and ``daimon-node rate``: moving tokens and rating a participant."""

from __future__ import annotations

from typing import Optional

import typer

from daimon_node.cli.chain import ChainCommandError, hex0x, parse_address, parse_amount
from daimon_node.cli.txcommand import TxOptions, open_tx, tx_command

tx_app = typer.Typer(help="Sign and send transactions.", no_args_is_help=True)


@tx_app.command("transfer")
@tx_command
def transfer_cmd(
    opts: TxOptions,
    to: str = typer.Option(..., "--to", help="Recipient address (40 hex digits)."),
    amount: str = typer.Option(..., "--amount", help="Amount in base units (with --tokens: a decimal token amount)."),
    tokens: bool = typer.Option(False, "--tokens", help="--amount is a decimal token amount, scaled by the "
                                "problem's decimals (--fee stays in base units)."),
) -> None:
    """Transfer tokens of a problem chain to another address; prints the transaction hash."""
    from chain.payloads import Transfer

    recipient = parse_address(to, "--to address")
    if not tokens:
        parse_amount(amount, tokens=False, decimals=0, what="--amount")  # fail before contacting the node
    with open_tx(opts) as tx:
        units = parse_amount(amount, tokens=tokens, decimals=int(tx.params["decimals"]), what="--amount")
        if units == 0:
            raise ChainCommandError("--amount must be positive")
        tx.check_can_pay(units + tx.fee, "amount + fee")
        tx.report(tx.send(Transfer(recipient, units)), "transfer", to=hex0x(recipient), amount=str(units))


@tx_command
def rate(
    opts: TxOptions,
    target: str = typer.Option(..., "--target", help="Address to rate (40 hex digits)."),
    up: Optional[bool] = typer.Option(None, "--up/--down", help="Rate up (+1) or down (-1); one is required."),
) -> None:
    """Rate a participant's reputation up or down (once per target and period; holders only)."""
    from chain.payloads import Rate

    if up is None:
        raise ChainCommandError("say --up or --down")
    who = parse_address(target, "--target address")
    with open_tx(opts) as tx:
        if who == tx.keys.address_bytes:
            raise ChainCommandError("you cannot rate yourself")
        bal = tx.client.get_balance(tx.chain_id, tx.keys.address_bytes)
        if bal["spendable"] + bal["locked"] == 0:
            raise ChainCommandError(f"{tx.keys.address} holds no tokens on this chain; only holders may rate")
        tx.check_can_pay(tx.fee, "the fee")
        sent = tx.send(Rate(who, 1 if up else -1))
        reputation = tx.client.get_reputation(tx.chain_id, who) if sent.included else None
        tx.report(sent, "rate", target=hex0x(who), score=1 if up else -1, reputation=reputation)
    if not opts.as_json and reputation is not None:
        typer.echo(f"reputation of {hex0x(who)}: {reputation['score']} from {reputation['ratings']} ratings")


__all__ = ["tx_app", "rate", "transfer_cmd"]
