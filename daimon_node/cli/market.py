"""``daimon-node runner start``, ``daimon-node infer``, ``daimon-node offers`` (docs/market.md).

``infer`` pays through a payment channel: it opens (or tops up) a channel to the
chosen runner when needed (one ``OpenChannel`` tx, waited for), then signs a voucher
for the previous cumulative amount plus the runner's price and sends it with the
inputs through the node at ``--rpc``, which relays it over ``/daimon/infer/1``. The
last signed cumulative amount per (chain, runner) is kept in
``<key-dir>/vouchers.json``, so a runner cannot make us sign for calls twice.
Before paying, and again on the answer, the runner's model digest must equal the
chain's confirmed model (with ``--provisional``, its newest settled one): a runner
serving another model is refused.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import typer

from daimon_node.cli.chain import (
    ChainCommandError,
    JsonOption,
    KeyDirOption,
    RpcOption,
    connect,
    echo_json,
    parse_address,
    parse_amount,
    resolve_chain,
    rpc_errors_as_one_line,
    send_transaction,
)
from daimon_node.market.errors import StaleModel

if TYPE_CHECKING:
    from chain.payloads import Voucher

    from daimon_node.market.channel_client import ChannelView, PaidCall
    from daimon_node.market.messages import Inference, Quote

runner_app = typer.Typer(help="Serve the chain's confirmed model for pay (a model runner).", no_args_is_help=True)


# --- runner start -------------------------------------------------------------------------
@runner_app.command("start")
def runner_start(
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="TOML config (see configs/runner.toml)."),
    data_dir: Optional[Path] = typer.Option(None, "--dir", "-d", help="Override node.data_dir."),
    price: Optional[int] = typer.Option(None, "--price", help="Override roles.runner.price (base units per input)."),
    chain: Optional[str] = typer.Option(None, "--chain", help="Override roles.runner.chain (chain id hex)."),
    listen: Optional[str] = typer.Option(None, help="Override p2p.listen (a multiaddr)."),
    bootstrap: Optional[list[str]] = typer.Option(None, help="Add a bootstrap peer multiaddr (repeatable)."),
    rpc_port: Optional[int] = typer.Option(None, help="Override rpc.port (0 = any free port)."),
    log_file: Optional[Path] = typer.Option(None, help="Write logs to this file instead of stderr."),
) -> None:
    """Start the node with the runner role on: follow the confirmed model (roles.runner.serve), offer it,
    serve /daimon/infer/1."""
    from daimon_node.cli.start import run_node
    from daimon_node.config import load_config

    overrides = {
        "node.data_dir": str(data_dir) if data_dir else None,
        "p2p.listen": listen,
        "p2p.bootstrap": list(bootstrap) if bootstrap else None,
        "rpc.port": rpc_port,
        "roles.runner.enabled": True,
        "roles.runner.price": price,
        "roles.runner.chain": chain,
    }
    run_node(load_config(config, overrides), log_file)


# --- offers -------------------------------------------------------------------------------
@rpc_errors_as_one_line
def offers(
    problem: Optional[str] = typer.Argument(None, help="Problem chain id (or a unique prefix); default: the only one."),
    rpc: str = RpcOption,
    as_json: bool = JsonOption,
) -> None:
    """List the runners' inference offers with price, model (confirmed, provisional or stale) and reputation."""
    with connect(rpc) as client:
        chain_id = resolve_chain(client, problem)
        best, confirmed = client.best_model(chain_id), client.confirmed_model(chain_id)
        rows = []
        for o in client.get_offers(chain_id):
            rep = client.get_reputation(chain_id, o["provider"])
            serves = ("confirmed" if confirmed is not None and o["model_digest"] == confirmed["model_digest"] else
                      "provisional" if best is not None and o["model_digest"] == best["model_digest"] else "stale")
            rows.append({**o, "current": serves != "stale", "serves": serves,
                         "reputation": rep["score"], "ratings": rep["ratings"]})
    if as_json:
        echo_json(rows)
        return
    if not rows:
        typer.echo("no offers")
    for r in rows:
        state = "STALE" if r["serves"] == "stale" else f"current, {r['serves']}"
        typer.echo(f"{r['provider']}  price {r['price']}  model {r['model_digest'][2:18]} ({state})  "
                   f"reputation {r['reputation']} ({r['ratings']})  peer {r['peer_id']}")


# --- infer --------------------------------------------------------------------------------
def pick_offer(offer_list: list[dict[str, Any]], best_digest: str, max_price: int | None,
               runner: bytes | None) -> dict[str, Any]:
    """The cheapest offer serving model ``best_digest`` within ``max_price`` (and from ``runner`` if given)."""
    cands = [o for o in offer_list if runner is None or o["provider"] == "0x" + runner.hex()]
    if not cands:
        raise ChainCommandError("no runner offers inference on this chain" if runner is None
                                else f"runner 0x{runner.hex()} makes no offer")
    current = [o for o in cands if o["model_digest"] == best_digest]
    if not current:
        raise StaleModel(f"every offer serves a stale model ({', '.join(o['model_digest'][2:14] for o in cands)}); "
                         f"the chain's model is {best_digest[2:14]}")
    affordable = [o for o in current if max_price is None or int(o["price"]) <= max_price]
    if not affordable:
        raise ChainCommandError(f"no current offer at or below --max-price {max_price} "
                                f"(cheapest {min(int(o['price']) for o in current)})")
    return min(affordable, key=lambda o: int(o["price"]))


def wanted_model(client: Any, chain_id: bytes, provisional: bool) -> dict[str, Any]:
    """The model a user pays for: the confirmed one (past its season's holdout, so it never
    burns), or with ``provisional`` the newest settled one. Runners serve the same by default
    (``roles.runner.serve``)."""
    if provisional:
        best = client.best_model(chain_id)
        if best is None:
            raise ChainCommandError("no model has settled on this chain yet")
        return best  # type: ignore[no-any-return]
    confirmed = client.confirmed_model(chain_id)
    if confirmed is None:
        settled = client.best_model(chain_id)
        raise ChainCommandError("no model is confirmed on this chain yet" + (
            " (the settled one waits for its season's holdout reveal; --provisional pays for it now)"
            if settled is not None else ""))
    return confirmed  # type: ignore[no-any-return]


class RpcMarketNode:
    """``market.channel_client.MarketNode`` over a node's JSON-RPC; a runner's refusal, which the
    node relays as ``Rejected`` with the refusal's code as ``rule``, becomes its typed ``InferError``."""

    def __init__(self, client: Any, key_dir: Path) -> None:
        self.client = client
        self.key_dir = key_dir

    def quote(self, chain_id: bytes, runner: bytes, payer: bytes) -> Quote:
        from daimon_node.market.messages import Quote

        q = self._relay("daimon_inferQuote", "0x" + chain_id.hex(), "0x" + runner.hex(), "0x" + payer.hex())
        return Quote(int(q["price"]), bytes.fromhex(q["model_digest"][2:]), int(q["paid"]), int(q["epoch"]))

    def channel(self, chain_id: bytes, payer: bytes, runner: bytes) -> ChannelView | None:
        from daimon_node.market.channel_client import ChannelView

        ch = self.client.call("daimon_getChannel", "0x" + chain_id.hex(), "0x" + payer.hex(), "0x" + runner.hex())
        if ch is None:
            return None
        return ChannelView(int(ch["deposit"]), int(ch["redeemed"]), int(ch["expires_period"]), int(ch["epoch"]),
                           bool(ch["open"]))

    def period(self, chain_id: bytes) -> int:
        return int(self.client.period(chain_id)["period"])

    def open_channel(self, chain_id: bytes, runner: bytes, amount: int, expires_period: int) -> None:
        from chain.payloads import OpenChannel

        send_transaction(self.client, chain_id, self.key_dir, OpenChannel(runner, amount, expires_period), None,
                         wait=True, timeout=0.0)

    def infer(self, chain_id: bytes, runner: bytes, voucher: Voucher, inputs_npy: bytes) -> Inference:
        from daimon_node.market.messages import Inference

        r = self._relay("daimon_infer", "0x" + chain_id.hex(), "0x" + runner.hex(), "0x" + voucher.encode().hex(),
                        "0x" + inputs_npy.hex())
        return Inference(bytes.fromhex(r["model_digest"][2:]), bytes.fromhex(r["scores_npy"]), int(r["cumulative"]))

    def _relay(self, method: str, *params: str) -> dict[str, Any]:
        from daimon_node.market.errors import refusal
        from daimon_node.rpc.errors import Rejected

        try:
            return self.client.call(method, *params)  # type: ignore[no-any-return]
        except Rejected as exc:
            if exc.rule is None:
                raise
            raise refusal(exc.rule, exc.reason) from None


@rpc_errors_as_one_line
def infer(
    problem: str = typer.Option(..., "--problem", "-p", help="Problem chain id (or a unique prefix of 8+ digits)."),
    input_file: Path = typer.Option(..., "--input", "-i", help="Inputs as .npy: one input or a batch [N, ...]."),
    max_price: Optional[str] = typer.Option(None, "--max-price", help="Most base units to pay per input."),
    runner: Optional[str] = typer.Option(None, "--runner", help="Use this runner's offer (address)."),
    deposit: Optional[str] = typer.Option(None, "--deposit", help="Channel deposit when one must be opened or "
                                          "topped up (base units; default 100 calls like this one)."),
    channel_periods: int = typer.Option(100, "--channel-periods", help="A new channel expires this many periods on."),
    provisional: bool = typer.Option(False, "--provisional", help="Pay for the newest settled model, which its "
                                     "season's holdout may still burn (default: only the confirmed model)."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write the scores here as .npy."),
    key_dir: Path = KeyDirOption,
    rpc: str = RpcOption,
    as_json: bool = JsonOption,
) -> None:
    """Pay a runner for one inference call (price per input) on the chain's confirmed model
    (--provisional: its newest settled one) and print the outputs."""
    import numpy as np

    from daimon_node.keystore import load_key
    from daimon_node.market.channel_client import CallTerms, ChannelClient, VoucherLedger
    from daimon_node.market.messages import parse_npy
    from daimon_node.rpc.client import RpcClient

    keys = load_key(key_dir)
    cap = parse_amount(max_price, tokens=False, decimals=0, what="--max-price") if max_price is not None else None
    amount = parse_amount(deposit, tokens=False, decimals=0, what="--deposit") if deposit else None
    runner_addr = parse_address(runner, "--runner") if runner else None
    try:
        inputs = parse_npy(input_file.read_bytes())
    except FileNotFoundError:
        raise ChainCommandError(f"input file {input_file} not found") from None
    with RpcClient(rpc, timeout=120.0) as client:  # the first call may start the runner's sandbox
        chain_id = resolve_chain(client, problem)
        best = wanted_model(client, chain_id, provisional)
        offer = pick_offer(client.get_offers(chain_id), best["model_digest"], cap, runner_addr)
        rank = len(client.get_problem(chain_id)["params"]["input_spec"]["shape"])
        payer = ChannelClient(keys, VoucherLedger(key_dir / "vouchers.json"), RpcMarketNode(client, key_dir),
                              on_open=lambda a: typer.echo(f"opening a channel to {offer['provider']}: deposit {a}, "
                                                           "waiting for a block...", err=True))
        terms = CallTerms(bytes.fromhex(best["model_digest"][2:]), cap, amount, channel_periods)
        paid = payer.call(chain_id, bytes.fromhex(offer["provider"][2:]), inputs, rank, terms)
    if output is not None:
        np.save(output, paid.scores, allow_pickle=False)
    _print_paid_call(chain_id, offer["provider"], paid, as_json)


def _print_paid_call(chain_id: bytes, provider: str, paid: PaidCall, as_json: bool) -> None:
    labels = [int(x) for x in paid.scores.argmax(axis=1)]
    digest = "0x" + paid.inference.model_digest.hex()
    if as_json:
        echo_json({"chain": "0x" + chain_id.hex(), "runner": provider, "model_digest": digest,
                   "price": str(paid.price), "cost": str(paid.cost), "paid_cumulative": str(paid.inference.cumulative),
                   "labels": labels, "scores": paid.scores.tolist()})
        return
    typer.echo(f"runner {provider}  model {digest[2:18]} (current)  price {paid.price} per input  "
               f"this call {paid.cost}  paid so far {paid.inference.cumulative}")
    typer.echo("labels " + " ".join(str(x) for x in labels))


__all__ = ["runner_app", "infer", "offers", "pick_offer", "StaleModel"]
