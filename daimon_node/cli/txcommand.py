"""What every command that signs and sends a transaction shares: its options, its session, its report.

A command declared with ``@tx_command`` lists only its own options; the seven every
transaction takes (``--chain --fee --key-dir --rpc --wait --timeout --json``) are added to
the signature typer reads and reach the command as one ``TxOptions``. Inside, ``open_tx``
gives a ``Tx``: the node, the resolved chain, its parameters, the fee and the key, with the
checks and steps each command repeated before (can the key pay, sign and send, print).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from daimon_node.cli.chain import (
    ChainCommandError,
    ChainOption,
    FeeOption,
    JsonOption,
    KeyDirOption,
    RpcOption,
    Sent,
    TimeoutOption,
    WaitOption,
    connect,
    format_tokens,
    hex0x,
    parse_amount,
    problem_params,
    report_sent,
    resolve_chain,
    resolve_fee,
    rpc_errors_as_one_line,
    send_transaction,
)
from daimon_node.rpc.client import RpcClient

if TYPE_CHECKING:
    from chain.crypto import KeyPair


@dataclass(frozen=True)
class TxOptions:
    """The options of every transaction command."""

    chain: Optional[str]
    fee: Optional[str]
    key_dir: Path
    rpc: str
    wait: bool
    timeout: float
    as_json: bool


_OPTIONS: tuple[tuple[str, Any, Any], ...] = (
    ("chain", Optional[str], ChainOption), ("fee", Optional[str], FeeOption), ("key_dir", Path, KeyDirOption),
    ("rpc", str, RpcOption), ("wait", bool, WaitOption), ("timeout", float, TimeoutOption),
    ("as_json", bool, JsonOption),
)


def option_group(group: Callable[..., Any], param: str,
                 options: tuple[tuple[str, Any, Any], ...]) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Commands that share a set of options declare them once: ``options`` ((name, type, typer
    option), ...) join the signature typer reads, and the command gets ``param=group(**values)``."""

    def decorate(fn: Callable[..., None]) -> Callable[..., None]:
        own = [p for p in inspect.signature(fn).parameters.values() if p.name != param]
        shared = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)
                  for name, annotation, default in options]

        @functools.wraps(fn)
        def command(**kwargs: Any) -> None:
            values = group(**{name: kwargs.pop(name) for name, _, _ in options})
            fn(**kwargs, **{param: values})

        command.__signature__ = inspect.Signature(own + shared)  # type: ignore[attr-defined]
        return command

    return decorate


def tx_command(fn: Callable[..., None]) -> Callable[..., None]:
    """``fn(own options..., opts: TxOptions)`` as a typer command that also takes the seven
    shared options; a bad ``--fee`` fails before the node is asked, and a socket's ``OSError``
    is one line, like every RPC command's."""

    @functools.wraps(fn)
    def checked(*, opts: TxOptions, **kwargs: Any) -> None:
        if opts.fee is not None:
            parse_amount(opts.fee, tokens=False, decimals=0, what="--fee")
        fn(**kwargs, opts=opts)

    return rpc_errors_as_one_line(option_group(TxOptions, "opts", _OPTIONS)(checked))


def check_can_pay(client: RpcClient, chain: bytes, address: bytes, cost: int, what: str,
                  params: dict[str, Any]) -> None:
    """One line, and no fee spent, when ``address``'s spendable balance is below ``cost``."""
    spendable = int(client.get_balance(chain, address)["spendable"])
    if spendable < cost:
        decimals, symbol = int(params["decimals"]), params["token_symbol"]
        raise ChainCommandError(f"0x{address.hex()} holds {format_tokens(spendable, decimals)} {symbol} spendable, "
                                f"below {what} = {format_tokens(cost, decimals)} {symbol}")


@dataclass
class Tx:
    """A transaction command's session with the node."""

    client: RpcClient
    chain_id: bytes
    params: dict[str, Any]
    fee: int  # base units: --fee, or the problem's minimum
    keys: "KeyPair"
    opts: TxOptions

    def check_can_pay(self, cost: int, what: str) -> None:
        check_can_pay(self.client, self.chain_id, self.keys.address_bytes, cost, what, self.params)

    def send(self, payload: Any) -> Sent:
        """Sign ``payload`` with the next nonce, send it and, with ``--wait``, follow it into a block."""
        return send_transaction(self.client, self.chain_id, self.opts.key_dir, payload, self.fee,
                                wait=self.opts.wait, timeout=self.opts.timeout, params=self.params)

    def report(self, sent: Sent, kind: str, **extra: Any) -> None:
        """The hash (and block) for people, or one JSON document with ``--json``."""
        report_sent(sent, self.opts.as_json, {"chain": hex0x(self.chain_id), "type": kind, **extra,
                                              "fee": str(self.fee)})


@contextmanager
def open_tx(opts: TxOptions) -> Iterator[Tx]:
    """Load the key, connect, resolve the chain and the fee."""
    from daimon_node.keystore import load_key

    keys = load_key(opts.key_dir)
    with connect(opts.rpc) as client:
        chain_id = resolve_chain(client, opts.chain)
        params = problem_params(client, chain_id)
        yield Tx(client, chain_id, params, resolve_fee(client, chain_id, opts.fee, params), keys, opts)
