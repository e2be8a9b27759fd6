"""``daimon-node status``: the node, its chains and, for an account, what is locked, why and until when."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from daimon_node.cli.chain import (JsonOption, RpcOption, connect, echo_json, format_tokens, hex0x, parse_address,
                                   rpc_errors_as_one_line)
from daimon_node.rpc.client import RpcClient
from daimon_node.rpc.errors import RpcError


# --- status -------------------------------------------------------------------------------
def _or_none(value: Any) -> Any:
    return None if isinstance(value, RpcError) else value


def status_address(address: Optional[str], key_dir: Optional[Path]) -> bytes | None:
    """The account ``status`` explains: ``--address``, else the key in ``--key-dir``, else none."""
    if address is not None:
        return parse_address(address, "--address")
    if key_dir is not None:
        from daimon_node.keystore import load_key

        return load_key(key_dir).address_bytes
    return None


@rpc_errors_as_one_line
def status(
    rpc: str = RpcOption,
    as_json: bool = JsonOption,
    address: Optional[str] = typer.Option(None, "--address", help="Also show this account per chain: spendable, "
                                          "locked, and why each locked part is locked and from which period it "
                                          "comes back."),
    key_dir: Optional[Path] = typer.Option(None, "--key-dir", "-k", help="Show the account of the key in this "
                                           "data directory (as --address)."),
) -> None:
    """Show the node: version, peer id, peers, and per chain the height, head, period, time left, best model;
    with --address or --key-dir, the account's balance and what is locked, why, and until when."""
    account = status_address(address, key_dir)
    with connect(rpc) as client:
        out, params_of = gather_status(client, rpc, account)
    if as_json:
        echo_json(out)
        return
    print_status(out, params_of)


def gather_status(client: RpcClient, rpc: str, account: bytes | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """The node's view in two round trips, and each chain's parameters (to explain the locks)."""
    info, problems, syncing = client.batch([("daimon_nodeInfo", []), ("daimon_listProblems", []),
                                            ("daimon_syncing", [])])
    for value in (info, problems):
        if isinstance(value, RpcError):
            raise value
    calls = []
    for p in problems:
        calls += [("daimon_period", [p["chain"]]), ("daimon_bestModel", [p["chain"]])]
    answers = client.batch(calls)
    accounts = []
    if account is not None:
        account_calls = []
        for p in problems:
            account_calls += [("daimon_getLocks", [p["chain"], hex0x(account)]), ("daimon_getProblem", [p["chain"]])]
        accounts = client.batch(account_calls)
    behind = {s["chain"]: s for s in syncing} if isinstance(syncing, list) else {}
    chains, params_of = [], {}
    for i, p in enumerate(problems):
        period, best = _or_none(answers[2 * i]), _or_none(answers[2 * i + 1])
        chains.append({
            "chain": p["chain"], "name": p["name"], "height": p["height"], "head": p["head"],
            "period": None if period is None else period["period"],
            "period_end": None if period is None else period["end"],
            "remaining_s": None if period is None else round(period["remaining"], 3),
            "best": best, "syncing": behind.get(p["chain"]),
        })
        if accounts:
            chains[-1]["account"] = _or_none(accounts[2 * i])
            problem = _or_none(accounts[2 * i + 1])
            params_of[p["chain"]] = None if problem is None else problem["params"]
    out = {"rpc": rpc, "version": info.get("version"), "peer_id": info.get("peer_id"), "peers": info.get("peers"),
           "healthy": info.get("healthy"), "reason": info.get("reason"), "chains": chains}
    return out, params_of


def print_status(out: dict[str, Any], params_of: dict[str, Any]) -> None:
    health = "healthy" if out["healthy"] else f"unhealthy ({out['reason']})"
    typer.echo(f"node     {out['peer_id']}  v{out['version']}  {health}")
    typer.echo(f"rpc      {out['rpc']}")
    typer.echo(f"peers    {out['peers']}")
    if not out["chains"]:
        typer.echo("chains   none yet")
    for c in out["chains"]:
        print_chain_status(c)
        if c.get("account") is not None and params_of.get(c["chain"]) is not None:
            print_locks(c["account"], params_of[c["chain"]])


def print_chain_status(c: dict[str, Any]) -> None:
    typer.echo(f"chain    {c['chain'][2:]}  {c['name']}")
    if c["height"] < 0:
        typer.echo("  height   - (waiting for the Problem block)")
    else:
        typer.echo(f"  height   {c['height']}  head {c['head'][2:18]}")
    if c["period"] is not None:
        phase = "T_p (problem definition)" if c["period"] == 0 else "competition"
        typer.echo(f"  period   {c['period']} {phase}, {c['remaining_s']:.1f} s left")
    best = c["best"]
    if best:
        typer.echo(f"  best     distance {best['distance_ppb'] / 1e9:.6f} ({best['distance_ppb']} ppb), model "
                   f"{best['model_digest'][2:18]} by {best['prover']} at height {best['height']}")
    else:
        typer.echo("  best     no improvement yet")
    if c["syncing"]:
        typer.echo(f"  syncing  {c['syncing']['current']} of {c['syncing']['highest']}")


# --- status: what is locked ---------------------------------------------------------------
def describe_part(part: dict[str, Any], period: int, unbonding_periods: int) -> str:
    """Why an amount is locked and what returns it, in one line."""
    kind, free_from = part["kind"], part["free_from"]
    when = "now" if free_from is not None and free_from <= period else f"from period {free_from}"
    if kind == "validator_bond":
        return (f"validator bond, active: 'daimon-node validator unbond' starts unbonding; withdrawable "
                f"{unbonding_periods} periods after")
    if kind == "unbonding":
        return f"validator bond unbonding until period {free_from}: 'daimon-node validator withdraw' {when}"
    if kind == "channel_deposit":
        return (f"channel deposit to {part['ref']}, expires period {free_from}: 'daimon-node channel close "
                f"--runner {part['ref']}' {when}")
    if kind == "season_reward":
        return f"reward locked in season {part['season']}: vests or burns at its holdout reveal, {when}"
    if kind == "improver_bond":
        where = f"season {part['season']}'s holdout reveal" if part["season"] is not None else "the settlement"
        return f"improver bond held until {where} ({when}); burned if the proof fails"
    if kind == "contributor_bond":
        return (f"contributor bond behind season {part['season']}'s sealed holdout: returned at its reveal, {when}; "
                "slashed to the locked holders if the reveal window is missed")
    return kind


def print_locks(locks: dict[str, Any], params: dict[str, Any]) -> None:
    decimals, symbol = int(params["decimals"]), params["token_symbol"]
    typer.echo(f"  account  {locks['address']}  spendable {format_tokens(int(locks['spendable']), decimals)} {symbol}"
               f"  locked {format_tokens(int(locks['locked']), decimals)} {symbol}")
    for part in locks["parts"]:
        amount = format_tokens(int(part["amount"]), decimals)
        typer.echo(f"    {amount} {symbol}  {describe_part(part, int(locks['period']), int(params['unbonding_periods']))}")
