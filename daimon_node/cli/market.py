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

import json
from pathlib import Path
from typing import Any, Optional

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
from daimon_node.errors import DaimonError

runner_app = typer.Typer(help="Serve the chain's confirmed model for pay (a model runner).", no_args_is_help=True)


class StaleModel(DaimonError):
    """The runner's model digest is not the model the user pays for (confirmed, or provisional)."""


# --- runner start -------------------------------------------------------------------------
@runner_app.command("start")
def runner_start(
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="TOML config (see configs/runner.toml)."),
    data_dir: Optional[Path] = typer.Option(None, "--dir", "-d", help="Override node.data_dir."),
    price: Optional[int] = typer.Option(None, "--price", help="Override roles.runner.price (base units per call)."),
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
def _ledger_path(key_dir: Path) -> Path:
    return key_dir / "vouchers.json"


def _ledger(key_dir: Path) -> dict[str, Any]:
    path = _ledger_path(key_dir)
    return json.loads(path.read_text()) if path.exists() else {}


def _save_ledger(key_dir: Path, ledger: dict[str, Any]) -> None:
    path = _ledger_path(key_dir)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(ledger, indent=1))
    tmp.replace(path)


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


@rpc_errors_as_one_line
def infer(
    problem: str = typer.Option(..., "--problem", "-p", help="Problem chain id (or a unique prefix of 8+ digits)."),
    input_file: Path = typer.Option(..., "--input", "-i", help="Inputs as .npy: one input or a batch [N, ...]."),
    max_price: Optional[str] = typer.Option(None, "--max-price", help="Most base units to pay per call."),
    runner: Optional[str] = typer.Option(None, "--runner", help="Use this runner's offer (address)."),
    deposit: Optional[str] = typer.Option(None, "--deposit", help="Channel deposit when one must be opened or "
                                          "topped up (base units; default 100 calls)."),
    channel_periods: int = typer.Option(100, "--channel-periods", help="A new channel expires this many periods on."),
    provisional: bool = typer.Option(False, "--provisional", help="Pay for the newest settled model, which its "
                                     "season's holdout may still burn (default: only the confirmed model)."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write the scores here as .npy."),
    key_dir: Path = KeyDirOption,
    rpc: str = RpcOption,
    as_json: bool = JsonOption,
) -> None:
    """Pay a runner for one inference call on the chain's confirmed model (--provisional: its newest
    settled one) and print the outputs."""
    import numpy as np

    from chain.payloads import OpenChannel

    from daimon_node.keystore import load_key
    from daimon_node.market.service import make_voucher, npy_bytes, parse_npy
    from daimon_node.rpc.errors import Rejected

    keys = load_key(key_dir)
    cap = parse_amount(max_price, tokens=False, decimals=0, what="--max-price") if max_price is not None else None
    runner_addr = parse_address(runner, "--runner") if runner else None
    try:
        inputs = parse_npy(input_file.read_bytes())
    except FileNotFoundError:
        raise ChainCommandError(f"input file {input_file} not found") from None
    from daimon_node.rpc.client import RpcClient

    with RpcClient(rpc, timeout=120.0) as client:  # the first call may start the runner's sandbox
        chain_id = resolve_chain(client, problem)
        best = wanted_model(client, chain_id, provisional)
        offer = pick_offer(client.get_offers(chain_id), best["model_digest"], cap, runner_addr)
        provider = bytes.fromhex(offer["provider"][2:])
        quote = client.call("daimon_inferQuote", "0x" + chain_id.hex(), offer["provider"], "0x" + keys.address_bytes.hex())
        if quote["model_digest"] != best["model_digest"]:
            raise StaleModel(f"runner {offer['provider']} serves model {quote['model_digest'][2:18]}, the chain's model "
                             f"is {best['model_digest'][2:18]}: stale, not paying")
        price = int(quote["price"])
        if cap is not None and price > cap:
            raise ChainCommandError(f"runner now asks {price} per call, above --max-price {cap}")
        key = f"{chain_id.hex()}/{provider.hex()}"
        ledger = _ledger(key_dir)
        period = client.period(chain_id)["period"]

        def channel_floor() -> tuple[dict[str, Any] | None, int]:
            ch = client.call("daimon_getChannel", "0x" + chain_id.hex(), "0x" + keys.address_bytes.hex(), offer["provider"])
            if ch is None or not ch["open"]:
                return ch, 0
            mine = ledger.get(key)
            local = mine["cumulative"] if mine is not None and mine["epoch"] == ch["epoch"] else 0
            return ch, max(int(ch["redeemed"]), local)

        channel, floor = channel_floor()
        if (channel is None or not channel["open"] or int(channel["deposit"]) - floor < price
                or channel["expires_period"] <= period + 2):
            amount = parse_amount(deposit, tokens=False, decimals=0, what="--deposit") if deposit else 100 * price
            amount = max(amount, price)
            typer.echo(f"opening a channel to {offer['provider']}: deposit {amount}, waiting for a block...", err=True)
            send_transaction(client, chain_id, key_dir, OpenChannel(provider, amount, period + channel_periods), None,
                             wait=True, timeout=0.0)
            channel, floor = channel_floor()
        if channel is None or not channel["open"]:
            raise ChainCommandError("the channel did not open")
        if int(quote["paid"]) > floor:
            raise ChainCommandError(f"the runner says {quote['paid']} was paid, our record says {floor}; "
                                    f"refusing to pay again (check {_ledger_path(key_dir)})")
        cumulative = floor + price
        voucher = make_voucher(keys, chain_id, provider, channel["epoch"], cumulative)
        ledger[key] = {"epoch": channel["epoch"], "cumulative": cumulative}
        _save_ledger(key_dir, ledger)  # signed: the runner may redeem it whatever happens next
        try:
            result = client.call("daimon_infer", "0x" + chain_id.hex(), offer["provider"],
                                 "0x" + voucher.encode().hex(), "0x" + npy_bytes(inputs).hex())
        except Rejected as exc:
            if exc.rule in ("run_failed", "bad_input"):  # the runner kept no payment
                ledger[key] = {"epoch": channel["epoch"], "cumulative": floor}
                _save_ledger(key_dir, ledger)
            raise
    if result["model_digest"] != best["model_digest"]:
        raise StaleModel(f"runner answered with model {result['model_digest'][2:18]}, the chain's model is "
                         f"{best['model_digest'][2:18]}")
    scores = parse_npy(bytes.fromhex(result["scores_npy"]))
    if output is not None:
        np.save(output, scores, allow_pickle=False)
    out = {"chain": "0x" + chain_id.hex(), "runner": offer["provider"], "model_digest": result["model_digest"],
           "price": str(price), "paid_cumulative": result["cumulative"], "labels": result["labels"],
           "scores": scores.tolist()}
    if as_json:
        echo_json(out)
        return
    typer.echo(f"runner {offer['provider']}  model {result['model_digest'][2:18]} (current)  "
               f"price {price}  paid so far {result['cumulative']}")
    typer.echo("labels " + " ".join(str(x) for x in result["labels"]))


__all__ = ["runner_app", "infer", "offers", "pick_offer", "StaleModel"]
