"""The helpers of every command that talks to a running node.

Everything goes through ``daimon_node.rpc.client.RpcClient`` (``--rpc URL``, default
``http://127.0.0.1:8545`` or ``$DAIMON_RPC``). Transactions are built and signed
here with the key of ``--key-dir``, their nonce comes from ``daimon_getNonce``,
and ``--wait`` follows the chain until a block holds the transaction (bounded).
The helpers below (option declarations, hex parsing, chain resolution, sending a
transaction) are shared with the other command modules. Every mistake a
user can make is a ``DaimonError``: ``daimon-node`` prints one line, exit code 1.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, NamedTuple, Optional

import typer

from daimon_node.rpc.client import RpcClient
from daimon_node.errors import DaimonError

if TYPE_CHECKING:
    from chain.crypto import KeyPair

DEFAULT_RPC = "http://127.0.0.1:8545"

RpcOption = typer.Option(DEFAULT_RPC, "--rpc", envvar="DAIMON_RPC", help="JSON-RPC URL of a node.")
JsonOption = typer.Option(False, "--json", help="Print one JSON document (for scripts).")
ChainOption = typer.Option(None, "--chain", "-c", help="Problem chain id (64 hex digits, or a unique prefix of "
                           "8+ digits); default: the node's only chain.")
KeyDirOption = typer.Option(Path(".daimon"), "--key-dir", "-k", help="Data directory holding the signing key.")
FeeOption = typer.Option(None, "--fee", help="Fee in base units, paid to the block's committer (default: the "
                         "problem's minimum fee; committers take the highest fee per byte first).")
WaitOption = typer.Option(False, "--wait", help="Wait until a block includes the transaction.")
TimeoutOption = typer.Option(0.0, "--timeout", help="Seconds --wait waits at most (0: three periods plus grace).")


class ChainCommandError(DaimonError):
    """A chain command got a bad argument or the node's answer rules the action out."""


class WaitTimeout(DaimonError):
    """``--wait`` ran out of time before a block included the transaction."""


# --- parsing ------------------------------------------------------------------------------
def parse_hex(text: str, size: int, what: str) -> bytes:
    """``0x``-hex or bare hex of exactly ``size`` bytes, else one clear error."""
    body = text.strip()
    if body[:2].lower() == "0x":
        body = body[2:]
    try:
        value = bytes.fromhex(body)
    except ValueError:
        raise ChainCommandError(f"{what} {text!r} is not hex") from None
    if len(value) != size:
        raise ChainCommandError(f"{what} {text!r} must be {size} bytes ({2 * size} hex digits), got {len(value)}")
    return value


def parse_address(text: str, what: str = "address") -> bytes:
    return parse_hex(text, 20, what)


def is_chain_id(text: str) -> bool:
    body = text[2:] if text[:2].lower() == "0x" else text
    return len(body) == 64 and all(c in "0123456789abcdefABCDEF" for c in body)


def parse_amount(text: str, *, tokens: bool, decimals: int, what: str) -> int:
    """Base units from an integer string, or from a decimal token amount with ``tokens``."""
    text = text.strip().replace("_", "")
    if tokens:
        try:
            value = Decimal(text)
        except InvalidOperation:
            raise ChainCommandError(f"{what} {text!r} is not a decimal token amount") from None
        if not value.is_finite():
            raise ChainCommandError(f"{what} {text!r} is not a decimal token amount")
        scaled = value.scaleb(decimals)
        if scaled != scaled.to_integral_value():
            raise ChainCommandError(f"{what} {text} has more than {decimals} decimal places")
        units = int(scaled)
    else:
        if not text.lstrip("-").isdigit():
            raise ChainCommandError(f"{what} {text!r} is not an integer number of base units (use --tokens for decimals)")
        units = int(text)
    if units < 0:
        raise ChainCommandError(f"{what} must not be negative")
    if units >= 1 << 128:
        raise ChainCommandError(f"{what} is too large (an amount is below 2^128 base units)")
    return units


def format_tokens(units: int, decimals: int) -> str:
    """``1500000000000000000`` with 18 decimals -> ``1.5``."""
    if decimals <= 0:
        return str(units)
    whole, frac = divmod(units, 10**decimals)
    frac_text = str(frac).rjust(decimals, "0").rstrip("0")
    return f"{whole}.{frac_text}" if frac_text else str(whole)


def hex0x(value: bytes) -> str:
    return "0x" + value.hex()


def echo_json(obj: Any) -> None:
    typer.echo(json.dumps(obj, indent=2))


# --- talking to the node ------------------------------------------------------------------
def connect(url: str) -> RpcClient:
    return RpcClient(url)


def resolve_chain(client: RpcClient, text: Optional[str]) -> bytes:
    """A full chain id, a unique prefix of one the node follows, or (none given) the node's only chain."""
    if text is not None and is_chain_id(text):
        return parse_hex(text, 32, "chain id")
    chains = [c["chain"][2:] for c in client.list_problems() if c.get("followed", True)]
    if text is None:
        if len(chains) == 1:
            return bytes.fromhex(chains[0])
        if not chains:
            raise ChainCommandError(f"the node at {client.url} follows no chain yet; pass --chain")
        raise ChainCommandError(f"the node follows {len(chains)} chains; pick one with --chain "
                                f"({', '.join(c[:16] for c in chains)})")
    prefix = text[2:] if text[:2].lower() == "0x" else text
    prefix = prefix.lower()
    if len(prefix) < 8 or any(c not in "0123456789abcdef" for c in prefix):
        raise ChainCommandError(f"chain {text!r} is not a chain id (64 hex digits, or a prefix of 8 or more)")
    matches = [c for c in chains if c.startswith(prefix)]
    if len(matches) != 1:
        raise ChainCommandError(f"{'no' if not matches else 'more than one'} chain on the node at {client.url} "
                                f"starts with {prefix}")
    return bytes.fromhex(matches[0])


def problem_params(client: RpcClient, chain: bytes) -> dict[str, Any]:
    return client.get_problem(chain)["params"]  # type: ignore[no-any-return]


def head_block(client: RpcClient, chain: bytes) -> dict[str, Any]:
    """The head block as the RPC renders it (``hash``, ``height``, ``period``...)."""
    height = client.block_number(chain)
    if height < 0:
        raise ChainCommandError(f"chain {chain.hex()[:16]} has no Problem block yet")
    block = client.get_block_by_number(chain, height)
    if block is None:  # the head moved back (a fork switch) between the two calls: ask again
        block = client.get_block_by_number(chain, client.block_number(chain))
    if block is None:
        raise ChainCommandError(f"the node lost block {height} of chain {chain.hex()[:16]}; try again")
    return block


def default_wait(params: dict[str, Any]) -> float:
    return float(3 * int(params["t_b"]) + 2 * int(params["grace"]) + 5)


@dataclass
class Sent:
    tx_hash: str
    nonce: int
    sender: str
    included: dict[str, Any] | None = None


def wait_for_tx(client: RpcClient, chain: bytes, tx_hash: str, after_height: int, timeout: float,
                progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Poll new blocks above ``after_height`` until one lists ``tx_hash``; ``WaitTimeout`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    checked = after_height
    while True:
        height = client.block_number(chain)
        checked = min(checked, height)  # a fork switch may have replaced blocks we had looked at
        for n in range(checked + 1, height + 1):
            block = client.get_block_by_number(chain, n)
            if block is None:
                break
            if tx_hash in block.get("transactions", []):
                return {"height": n, "block": block["hash"], "period": block["period"]}
            checked = n
        if time.monotonic() >= deadline:
            raise WaitTimeout(f"transaction {tx_hash} not included after {timeout:g} s (chain height {height}); "
                              "it may still be pending in the mempool")
        time.sleep(0.5)


def resolve_fee(client: RpcClient, chain: bytes, fee: str | None, params: dict[str, Any] | None = None) -> int:
    """``--fee`` in base units, or the problem's minimum fee when it is not given."""
    if fee is not None:
        return parse_amount(fee, tokens=False, decimals=0, what="--fee")
    params = params if params is not None else problem_params(client, chain)
    return int(params["min_fee"])


class TxSession(NamedTuple):
    """What every transaction command works with: the node, the chain, its parameters, the fee
    (``--fee`` or the problem's minimum) and the signing key."""

    client: RpcClient
    chain_id: bytes
    params: dict[str, Any]
    fee: int
    keys: "KeyPair"


@contextmanager
def tx_session(rpc: str, chain: Optional[str], fee: Optional[str], key_dir: Path) -> Iterator[TxSession]:
    """Load the key, connect, resolve the chain and the fee: the start every transaction command shares."""
    from daimon_node.keystore import load_key

    keys = load_key(key_dir)
    with connect(rpc) as client:
        chain_id = resolve_chain(client, chain)
        params = problem_params(client, chain_id)
        yield TxSession(client, chain_id, params, resolve_fee(client, chain_id, fee, params), keys)


def send_transaction(client: RpcClient, chain: bytes, key_dir: Path, payload: Any, fee: int | None, *,
                     wait: bool, timeout: float, params: dict[str, Any] | None = None) -> Sent:
    """Sign ``payload`` with the next nonce, send it, and with ``wait`` follow it into a block.
    ``fee`` None pays the problem's minimum fee."""
    from chain.builder import make_transaction

    from daimon_node.keystore import load_key

    if fee is None:
        fee = resolve_fee(client, chain, None, params)
    keys = load_key(key_dir)
    nonce = client.get_nonce(chain, keys.address_bytes)
    after = client.block_number(chain)
    tx = make_transaction(keys, chain, nonce, payload, fee)
    tx_hash = client.send_raw_transaction(chain, tx.encode())
    sent = Sent(tx_hash, nonce, hex0x(keys.address_bytes))
    if wait:
        if timeout <= 0:
            timeout = default_wait(params if params is not None else problem_params(client, chain))
        sent.included = wait_for_tx(client, chain, tx_hash, after, timeout)
    return sent


def report_sent(sent: Sent, as_json: bool, extra: dict[str, Any]) -> None:
    if as_json:
        echo_json({"tx_hash": sent.tx_hash, "sender": sent.sender, "nonce": sent.nonce, **extra,
                   "included": sent.included})
        return
    typer.echo(sent.tx_hash)
    if sent.included is not None:
        inc = sent.included
        typer.echo(f"included in block {inc['height']} ({inc['block'][:18]}...) of period {inc['period']}")


def rpc_errors_as_one_line(fn: Callable[..., None]) -> Callable[..., None]:
    """Keep what the commands raise a ``DaimonError``: an ``OSError`` from a socket is one too."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        try:
            fn(*args, **kwargs)
        except (DaimonError, typer.Exit, typer.Abort):
            raise
        except OSError as exc:
            raise ChainCommandError(f"{exc.strerror or exc}") from None

    return wrapper
