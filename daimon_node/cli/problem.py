"""``daimon-node problem``: create a problem from a labelled dataset, show one.

``create`` is the contributor's kit (``daimon_node.proofs.problem_kit``): it writes
the published problem directory and, apart from it, a 0600 file with the
hidden test labels and the holdout's salt and labels. Its data is the bundled
digits or the user's own (``--data``, ``--images/--labels``; read by
``daimon_node.proofs.datasets``); ``export-train`` writes the public training part
for competitors.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from daimon_node.cli.problem_create import ProblemCommandError, create_cmd

app = typer.Typer(help="Create and inspect classification problems.", no_args_is_help=True)
app.command("create")(create_cmd)


@app.command("export-train")
def export_train_cmd(
    problem: Path = typer.Option(..., "--problem", help="The problem directory (made by 'problem create')."),
    out: Path = typer.Option(..., "--out", "-o", help="The .npz to write, with arrays X and y."),
) -> None:
    """Export a problem's public training part (X, y) as an .npz for competitors to train on."""
    from daimon_node.proofs.datasets import export_train

    x_shape, y_shape = export_train(problem, out)
    typer.echo(json.dumps({"out": str(out), "X": list(x_shape), "y": list(y_shape)}))


@app.command("reveal")
def reveal_cmd(
    problem: Path = typer.Option(..., "--problem", help="The problem directory (made by 'problem create')."),
    key_dir: Path = typer.Option(Path(".daimon"), "--key-dir", "-k", help="The creator's data directory."),
    secret: Optional[Path] = typer.Option(None, "--secret", help="Secret file (default: PROBLEM.secret.json)."),
    rpc: str = typer.Option("http://127.0.0.1:8545", "--rpc", envvar="DAIMON_RPC", help="JSON-RPC URL of a node."),
) -> None:
    """The contributor's season step by hand: open the sealed holdout, or seal the next season's.

    While the season's holdout is sealed, sends the signed SeasonReveal (salt and
    x_h; valid only inside the reveal window). Once it is revealed, sends a
    NewHoldout transaction with the secret file's next holdout set; the node
    serving the problem (contributor role, same secret file) publishes its Z_h.
    """
    from chain.builder import make_paid_transaction
    from chain.payloads import NewHoldout

    from daimon_node.cli.chain import connect
    from daimon_node.keystore import load_key
    from daimon_node.proofs.problem_kit import holdout_for_season, load_problem, read_secret, season_reveal_for

    keys = load_key(key_dir)
    p = load_problem(problem)
    secret_path = secret or problem.with_name(problem.name + ".secret.json")
    sec = read_secret(secret_path)
    chain = p.chain_id
    with connect(rpc) as client:
        summary = client.get_problem(chain)
        season = summary.get("season")
        if season is None:
            raise ProblemCommandError("the chain has no season yet (no Problem block, or no sealed holdout)")
        index = int(season["index"])
        held = holdout_for_season(sec, index, problem)
        if held is None:
            raise ProblemCommandError(f"{secret_path} holds no holdout for season {index}")
        if season["sealed"]:
            reveal = season_reveal_for(held, chain, keys)
            client.submit_reveal(chain, reveal.encode())
            typer.echo(f"season {index}: holdout revealed (m_h={held.sealed.m_h}); it is judged in the next block")
            return
        nonce = client.get_nonce(chain, keys.address_bytes)
        tx = make_paid_transaction(keys, p.params, chain, nonce, NewHoldout(held.sealed))
        client.send_raw_transaction(chain, tx.encode())
        typer.echo(f"season {index}: NewHoldout sent (m_h={held.sealed.m_h}, Z_h {held.sealed.z_h_id.hex()[:16]})")


@app.command("list")
def list_cmd(
    rpc: str = typer.Option("http://127.0.0.1:8545", "--rpc", envvar="DAIMON_RPC", help="JSON-RPC URL of a node."),
    network: bool = typer.Option(False, "--network", help="Also the problems the node's peers serve that it does "
                                 "not follow, and for each problem the peers that hold it, with their heights."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON list (for scripts)."),
) -> None:
    """List the problem chains a node follows: chain id, name, height, head (--network: what its peers know)."""
    from daimon_node.cli.chain import connect, echo_json

    with connect(rpc) as client:
        problems = client.list_problems()
    if not network:
        problems = [p for p in problems if p.get("followed", True)]
    if as_json:
        echo_json(problems)
        return
    if not problems:
        typer.echo(f"the node at {rpc} {'knows' if network else 'follows'} no problem chain yet")
        return
    typer.echo(f"{'chain':<64}  {'height':>6}  {'head':<16}  name")
    for p in problems:
        head = "-" if p["height"] < 0 else p["head"][2:18]
        typer.echo(f"{p['chain'][2:]:<64}  {p['height']:>6}  {head:<16}  {p['name']}"
                   + ("" if p.get("followed", True) else "  (not followed)"))
        if network:
            holders = p.get("holders", [])
            typer.echo(f"  held by {len(holders)} peer(s)" if holders else "  no peer has listed it lately")
            for h in holders:
                typer.echo(f"    {h['peer_id']}  height {h['height']}")


@app.command("show")
def show_cmd(
    target: str = typer.Argument(..., metavar="CHAIN_OR_DIR", help="A chain id (64 hex digits, asked of the node "
                                 "over --rpc) or a problem directory (checked offline)."),
    rpc: str = typer.Option("http://127.0.0.1:8545", "--rpc", envvar="DAIMON_RPC", help="JSON-RPC URL of a node."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON (a directory's summary is always JSON)."),
) -> None:
    """Show a problem: a chain's live state from a node, or a problem directory's checked summary."""
    from daimon_node.cli.chain import is_chain_id

    path = Path(target)
    if path.is_dir() or not is_chain_id(target):
        if not path.exists():
            raise ProblemCommandError(f"{target!r} is neither a chain id (64 hex digits) nor a problem directory")
        show_directory(path)
        return
    show_chain(target, rpc, as_json)


def show_directory(directory: Path) -> None:
    """Check a problem directory (signatures, content ids) and print its summary as JSON."""
    from daimon_node.proofs.problem_kit import load_problem, problem_summary

    problem = load_problem(directory)
    summary = problem_summary(problem.proposal, problem.dels[0])
    summary["directory"] = str(directory)
    typer.echo(json.dumps(summary, indent=2))


def show_chain(text: str, rpc: str, as_json: bool) -> None:
    """A chain's problem over RPC, with its period, best model and (with a sealed holdout) season."""
    from daimon_node.cli.chain import connect, echo_json, format_tokens, parse_hex
    from daimon_node.rpc.errors import RpcError

    chain = parse_hex(text, 32, "chain id")
    with connect(rpc) as client:
        summary = client.get_problem(chain)
        extra = client.batch([("daimon_period", ["0x" + chain.hex()]), ("daimon_bestModel", ["0x" + chain.hex()])])
    period, best = (None if isinstance(v, RpcError) else v for v in extra)
    summary["period"] = period
    summary["best_model"] = best
    if summary.get("holdout") is not None:
        season = summary.get("season")
        summary["season_status"] = "not started" if season is None else (
            f"season {season['index']} from period {season['start_period']}: "
            f"{'holdout sealed' if season['sealed'] else 'holdout revealed'}, "
            f"{season['improvements']} improvements, {season['locked_rewards']} base units of rewards locked")
    if as_json:
        echo_json(summary)
        return
    p = summary["params"]
    decimals = int(p["decimals"])
    typer.echo(f"problem   {p['name']}  chain {chain.hex()}")
    typer.echo(f"creator   {summary['creator']}")
    typer.echo(f"token     {p['token_symbol']} ({decimals} decimals)  reward_a {p['reward_a']}, "
               f"scale {format_tokens(int(p['reward_scale']), decimals)}")
    typer.echo(f"classes   {p['num_classes']}  input {p['input_spec']['dtype']}{p['input_spec']['shape']}")
    typer.echo(f"periods   T_p {p['t_p']} s, T_b {p['t_b']} s, grace {p['grace']} s, delta {p['delta_ppb']} ppb")
    typer.echo("tuples    " + ", ".join(f"m={t['m']}" for t in summary["tuples"]))
    typer.echo(f"committers {len(p['committers'])}")
    height = summary.get("height", -1)
    typer.echo(f"height    {height if height >= 0 else '- (no Problem block yet)'}")
    if period is not None:
        phase = "T_p" if period["period"] == 0 else "competition"
        typer.echo(f"period    {period['period']} ({phase}), {period['remaining']:.1f} s left")
    if "d_c_ppb" in summary:
        d_c = summary["d_c_ppb"]
        typer.echo(f"d_c       {', '.join(f'{d / 1e9:.6f}' for d in d_c)}  "
                   f"minted {format_tokens(int(summary['minted']), decimals)}, "
                   f"burned {format_tokens(int(summary['burned']), decimals)} {p['token_symbol']}")
    if best:
        typer.echo(f"best      distance {best['distance_ppb'] / 1e9:.6f}, model {best['model_digest'][2:18]} by "
                   f"{best['prover']} (height {best['height']})")
    if summary.get("holdout") is not None:
        typer.echo(f"holdout   m_h={summary['holdout'].get('m_h')}  {summary['season_status']}")
    else:
        typer.echo("holdout   none (no seasons)")
