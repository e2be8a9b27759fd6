"""``daimon-node committer register|leave|status``: join or leave a problem's bonded committer set.

A ``RegisterCommitter`` locks the problem's committer bond and the key takes turns
``committer_delay`` periods after the block that holds it; a first ``LeaveCommitter``
leaves the rotation as long after, and a second, ``committer_delay`` periods later,
returns the bond (docs/protocol.md, "Committers by transaction"). The transactions are
signed with the key of ``--key-dir`` and sent through RPC like ``tx transfer``, paying
the problem's minimum fee unless ``--fee`` says more; the chain's own rules decide, so
a refusal is the node's typed answer, printed as one line.
"""

from __future__ import annotations

from typing import Any, Optional

import typer

from daimon_node.cli.chain import (
    ChainCommandError,
    ChainOption,
    JsonOption,
    RpcOption,
    connect,
    echo_json,
    hex0x,
    resolve_chain,
    rpc_errors_as_one_line,
)
from daimon_node.cli.txcommand import TxOptions, open_tx, tx_command
from daimon_node.rpc.client import RpcClient

app = typer.Typer(help="Join or leave a problem's bonded committer set.", no_args_is_help=True)


def get_committers(client: RpcClient, chain: bytes) -> dict[str, Any]:
    return client.call("daimon_getCommitters", hex0x(chain))  # type: ignore[no-any-return]


def own_record(view: dict[str, Any], public_key: bytes) -> dict[str, Any] | None:
    return next((r for r in view["records"] if r["committer"] == hex0x(public_key)), None)


@app.command("register")
@tx_command
def register_cmd(opts: TxOptions) -> None:
    """Lock the committer bond; this key takes turns committer_delay periods after inclusion."""
    from chain.payloads import RegisterCommitter

    with open_tx(opts) as tx:
        bond = int(tx.params["committer_bond"])
        if bond == 0:
            raise ChainCommandError(f"chain {tx.chain_id.hex()[:16]} has a fixed committer list (no committer bond)")
        tx.check_can_pay(bond + tx.fee, "bond + fee")
        sent = tx.send(RegisterCommitter())
        joins = None if sent.included is None else sent.included["period"] + int(tx.params["committer_delay"])
        tx.report(sent, "register_committer", bond=str(bond), joins_period=joins)
    if joins is not None and not opts.as_json:
        typer.echo(f"takes turns from period {joins}")


@app.command("leave")
@tx_command
def leave_cmd(opts: TxOptions) -> None:
    """Leave the rotation committer_delay periods after inclusion; run again committer_delay periods
    after leaving to get the bond back."""
    from chain.payloads import LeaveCommitter

    with open_tx(opts) as tx:
        record = own_record(get_committers(tx.client, tx.chain_id), tx.keys.public_key)
        if record is None:
            raise ChainCommandError(f"{tx.keys.address} is not a committer of chain {tx.chain_id.hex()[:16]}")
        action = "leave" if record["until"] == 0 else "claim_bond"
        sent = tx.send(LeaveCommitter())
        tx.report(sent, "leave_committer", action=action)
        delay = int(tx.params["committer_delay"])
    if sent.included is not None and not opts.as_json and action == "leave":
        left = sent.included["period"] + delay
        typer.echo(f"out of the rotation from period {left}; the bond can be claimed from period {left + delay}")


@app.command("status")
@rpc_errors_as_one_line
def status_cmd(chain: Optional[str] = ChainOption, rpc: str = RpcOption, as_json: bool = JsonOption) -> None:
    """Show the committer set in force, the next in-turn key, scheduled changes and bonded records."""
    with connect(rpc) as client:
        chain_id = resolve_chain(client, chain)
        view = get_committers(client, chain_id)
    if as_json:
        echo_json(view)
        return
    kind = "fixed list" if view["fixed"] else (f"bonded: bond {view['bond']}, delay {view['delay_periods']} "
                                               f"periods, miss limit {view['miss_limit']}")
    typer.echo(f"period {view['period']}  {kind}")
    for i, key in enumerate(view["in_force"]):
        mark = "  <- in turn" if key == view["in_turn"] else ""
        typer.echo(f"  {i:2d} {key}{mark}")
    for version in view["scheduled"]:
        typer.echo(f"from period {version['from_period']}: {len(version['members'])} committers")
    for rec in view["records"]:
        typer.echo(f"  {rec['committer'][:18]}... bond {rec['bond']} misses {rec['misses']} {rec['status']}"
                   + (f" until {rec['until']}" if rec["until"] else ""))
