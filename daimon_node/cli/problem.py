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

from chain.constants import DEFAULT_MIN_FEE, DEFAULT_QUORUM_PPB, PPB
from chain.errors import (
    CommitterParamsOutOfRange,
    ContributorBondTooSmall,
    InvalidProblem,
    ParameterOutOfRange,
    QuorumOutOfRange,
    SupplyTooLarge,
)

from daimon_node.errors import DaimonError

app = typer.Typer(help="Create and inspect classification problems.", no_args_is_help=True)


class ProblemCommandError(DaimonError):
    """A problem command got a bad option."""


def base_units(text: str, flag: str) -> int:
    from daimon_node.cli.chain import parse_amount

    return parse_amount(text, tokens=False, decimals=0, what=flag)


def parse_allocations(items: list[str]) -> tuple[tuple[bytes, int], ...]:
    """``--alloc ADDRESS=AMOUNT`` flags as genesis allocations; an address given twice is refused."""
    from daimon_node.cli.chain import parse_address

    out: dict[bytes, int] = {}
    for item in items:
        address_text, sep, amount_text = item.partition("=")
        if not sep:
            raise ProblemCommandError(f"--alloc {item!r} is not ADDRESS=AMOUNT")
        address = parse_address(address_text, "--alloc address")
        if address in out:
            raise ProblemCommandError(f"--alloc gives address {address_text} twice")
        out[address] = base_units(amount_text, f"--alloc amount for {address_text}")
    return tuple(out.items())


# The flag that sets each parameter validate_params checks by name.
PARAM_FLAGS = {"t_p": "--t-p", "t_b": "--t-b", "num_classes": "the data's class count"}


def explain_refusal(exc: InvalidProblem) -> str:
    """The chain's typed refusal of a parameter as one line naming the flag that sets it."""
    if isinstance(exc, ParameterOutOfRange):
        flag = PARAM_FLAGS.get(exc.name, "--" + exc.name.replace("_", "-"))
        bound = f"at least {exc.low}" if exc.high is None else f"in {exc.low}..{exc.high}"
        return f"{flag} {exc.value}: the chain requires {exc.name} {bound}"
    if isinstance(exc, QuorumOutOfRange):
        return (f"--quorum-ppb {exc.quorum_ppb}: the chain requires more than half the stake "
                f"({PPB // 2}) and at most all of it ({PPB})")
    if isinstance(exc, ContributorBondTooSmall):
        return (f"--contributor-bond {exc.bond}: below what one season can mint ({exc.season_mint} with this "
                "--reward-a and --reward-scale); a missed reveal must compensate every locked holder")
    if isinstance(exc, CommitterParamsOutOfRange):
        return (f"--committer-delay {exc.delay}: a committer set that changes by transaction needs a delay of "
                f"1..{exc.limit} periods")
    if isinstance(exc, SupplyTooLarge):
        return (f"--alloc total {exc.genesis} plus what the problem can mint ({exc.mintable}) exceeds the largest "
                f"amount the chain encodes ({exc.limit})")
    return f"the chain would refuse this problem: {exc}"


@app.command("create")
def create_cmd(
    dataset: Optional[str] = typer.Option(None, "--dataset", help="Bundled dataset (digits; the default "
                                          "when no --data or --images is given)."),
    out: Path = typer.Option(..., "--out", "-o", help="Problem directory to write (published)."),
    key_dir: Path = typer.Option(Path(".daimon"), "--key-dir", "-k", help="Creator's data directory."),
    secret_out: Optional[Path] = typer.Option(None, "--secret-out", help="Private file for x_t, x_h and the salt "
                                              "(default: OUT.secret.json beside OUT, mode 0600)."),
    name: str = typer.Option("digits", "--name"),
    symbol: str = typer.Option("DIG", "--symbol", help="Token symbol."),
    test_fraction: float = typer.Option(0.3, "--test-fraction", help="Share of the data in Z (hidden labels x_t)."),
    holdout_fraction: float = typer.Option(0.2, "--holdout-fraction", help="Share in sealed holdouts Z_h, all "
                                           "seasons together (0: none; see docs/soundness.md)."),
    t_p: int = typer.Option(60, "--t-p", help="Problem-definition period, seconds."),
    t_b: int = typer.Option(60, "--t-b", help="Competition period, seconds."),
    grace: int = typer.Option(30, "--grace", help="Seconds after a period before out-of-turn commits."),
    delta_ppb: int = typer.Option(1_000_000, "--delta-ppb", help="Required improvement over d_c, ppb."),
    tie_margin_ppb: int = typer.Option(100_000, "--tie-margin-ppb", help="Top-two score gap that is a tie, ppb."),
    max_ambiguous: Optional[int] = typer.Option(None, "--max-ambiguous", help="Default: 1% of labelled positions."),
    max_model_bytes: int = typer.Option(16 * 2**20, "--max-model-bytes"),
    max_infer_ms: int = typer.Option(10_000, "--max-infer-ms", help="Wall-time limit of one model run, ms."),
    season_periods: int = typer.Option(4, "--season-periods", help="Season length S with a holdout."),
    seasons: int = typer.Option(1, "--seasons", help="Holdout sets to pre-split, one per season (the holdout "
                                "share is divided among them; later ones stay private until sealed). On digits "
                                "one set (m_h = 359) is the smallest that confirms a gain reliably (docs/soundness.md)."),
    holdout_margin_ppb: Optional[int] = typer.Option(None, "--holdout-margin-ppb", help="True holdout gain the "
                                                     "problem pays for, ppb (default: the smallest m_h resolves)."),
    consistency_ppb: Optional[int] = typer.Option(None, "--consistency-ppb", help="DEL's relative fidelity "
                                                  "allowance, ppb (default: measured on the DEL built)."),
    holdout_z: float = typer.Option(2.58, "--holdout-z", help="z-score of the holdout tests (2.58: one-sided 99.5%)."),
    committer: Optional[list[str]] = typer.Option(None, "--committer", help="Committer public key (hex); "
                                                  "repeat; default: the creator."),
    t0: Optional[int] = typer.Option(None, "--t0", help="Creation time, Unix seconds (default: now)."),
    del_steps: int = typer.Option(0, "--del-steps", help="Train the DEL this many steps with del_embed (needs "
                                  "torch); 0: untrained random-projection DEL."),
    del_max_seconds: float = typer.Option(0.0, "--del-max-seconds", help="Stop DEL training after this long (0: no cap)."),
    seed: int = typer.Option(0, "--seed", help="Split and DEL seed."),
    min_fee: int = typer.Option(DEFAULT_MIN_FEE, "--min-fee", help="Least fee of any tx, base units (at least 1: "
                                "a chain without a fee takes free spam)."),
    # --- economics (each checked by the chain's validate_params before anything is built) ---
    reward_a: int = typer.Option(3, "--reward-a", help="Reward exponent a: an improvement from d_c to d pays "
                                 "scale * (G(d_c) - G(d)) with G(x) = (1 - x)^a (1..64)."),
    reward_scale: str = typer.Option(str(10**18), "--reward-scale", help="Reward scale, base units: what a "
                                     "perfect model from scratch earns."),
    validator_bond: str = typer.Option(str(10**18), "--validator-bond", help="Bond a validator locks, base units "
                                       "(at least 1; a vote weighs its bond)."),
    improver_bond: str = typer.Option(str(10**17), "--improver-bond", help="Bond locked with each anchored proof, "
                                      "base units (at least 1; burned if the proof is false)."),
    contributor_bond: Optional[str] = typer.Option(None, "--contributor-bond", help="Bond behind each sealed "
                                                   "holdout, base units (default and least: what a season can mint)."),
    max_votes: int = typer.Option(16, "--max-votes", help="Votes one block may carry (1..256)."),
    quorum_ppb: int = typer.Option(DEFAULT_QUORUM_PPB, "--quorum-ppb", help="Share of the bonded stake whose votes "
                                   "anchor a proof, ppb (above half, at most 10^9)."),
    unbonding_periods: int = typer.Option(2, "--unbonding-periods", help="Periods from 'validator unbond' until "
                                          "the bond can be withdrawn (at least 2)."),
    reveal_window: int = typer.Option(2, "--reveal-window", help="Periods after a season in which the contributor "
                                      "must reveal its holdout (at least 1)."),
    committer_bond: str = typer.Option("0", "--committer-bond", help="Bond a key locks to join the committer set "
                                       "by transaction, base units (0 with --committer-miss-limit 0: the --committer "
                                       "list is fixed, as in Clique)."),
    committer_delay: int = typer.Option(2, "--committer-delay", help="Periods before a committer joining, leaving "
                                        "or removed takes effect (1..32)."),
    committer_miss_limit: int = typer.Option(0, "--committer-miss-limit", help="In-turn slots a committer may miss "
                                             "in a row before it is removed and half its bond burns (0: never)."),
    alloc: Optional[list[str]] = typer.Option(None, "--alloc", help="Genesis allocation ADDRESS=AMOUNT (base units); "
                                              "repeat; default: the creator gets 1000 tokens."),
    # --- bring your own data (daimon_node.proofs.datasets) ---
    data: Optional[Path] = typer.Option(None, "--data", help="Your labelled data: an .npz with X and y, a "
                                        ".csv/.tsv (with --label-column), or a folder with one subfolder of "
                                        "PNG/JPEG images per class."),
    images: Optional[Path] = typer.Option(None, "--images", help="IDX images file (MNIST/FashionMNIST format, "
                                          "gzipped or not); goes with --labels."),
    labels: Optional[Path] = typer.Option(None, "--labels", help="IDX labels file; goes with --images."),
    label_column: Optional[str] = typer.Option(None, "--label-column", help="CSV: the column holding the labels "
                                               "(every other column is a numeric feature)."),
    image_size: Optional[str] = typer.Option(None, "--image-size", help="Image folder: resize every image to W "
                                             "or WxH pixels (needed when sizes differ)."),
    grayscale: Optional[bool] = typer.Option(None, "--grayscale/--rgb", help="Image folder: inputs (H, W) or "
                                             "(H, W, 3) uint8 (default: grayscale when every image is)."),
) -> None:
    """Create a problem: split the dataset, build the DEL, sign the proposal and test tuple.

    The data's input spec (shape, dtype, value range) goes into the problem:
    validators refuse a model whose input or output does not fit it.
    """
    from daimon_node.proofs.datasets import DataOptions, parse_image_size, select_dataset
    from daimon_node.keystore import load_key
    from daimon_node.proofs.problem_kit import ProblemKitError, ProblemOptions, create_problem, problem_summary

    ds = select_dataset(dataset, data, images, labels,
                        DataOptions(label_column, parse_image_size(image_size), grayscale))

    committers: tuple[bytes, ...] = ()
    for text in committer or []:
        try:
            pk = bytes.fromhex(text)
        except ValueError:
            pk = b""
        if len(pk) != 32:
            raise ProblemCommandError(f"--committer {text[:16]}... is not a 32-byte hex public key")
        committers += (pk,)
    keys = load_key(key_dir)
    opts = ProblemOptions(
        name=name, token_symbol=symbol, t_p=t_p, t_b=t_b, grace=grace, delta_ppb=delta_ppb,
        committers=committers, tie_margin_ppb=tie_margin_ppb, max_ambiguous=max_ambiguous,
        max_model_bytes=max_model_bytes, max_infer_ms=max_infer_ms, season_periods=season_periods,
        t0=t0, del_steps=del_steps, del_max_seconds=del_max_seconds, seed=seed,
        holdout_margin_ppb=holdout_margin_ppb, consistency_ppb=consistency_ppb,
        holdout_z_centi=int(round(holdout_z * 100)), min_fee=min_fee,
        reward_a=reward_a, reward_scale=base_units(reward_scale, "--reward-scale"),
        validator_bond=base_units(validator_bond, "--validator-bond"),
        improver_bond=base_units(improver_bond, "--improver-bond"),
        contributor_bond=None if contributor_bond is None else base_units(contributor_bond, "--contributor-bond"),
        max_votes=max_votes, quorum_ppb=quorum_ppb, unbonding_periods=unbonding_periods, reveal_window=reveal_window,
        committer_bond=base_units(committer_bond, "--committer-bond"), committer_delay=committer_delay,
        committer_miss_limit=committer_miss_limit,
        genesis=parse_allocations(alloc or []),
    )
    if min_fee < 1:
        raise ProblemCommandError(f"--min-fee {min_fee} must be at least 1")
    if not 0 < opts.holdout_z_centi <= 1000:
        raise ProblemCommandError(f"--holdout-z {holdout_z} is outside (0, 10]")
    try:
        created = create_problem(out, keys, dataset=ds, test_fraction=test_fraction,
                                 holdout_fraction=holdout_fraction, opts=opts, secret_path=secret_out, seasons=seasons)
    except ProblemKitError as err:
        if isinstance(err.__cause__, InvalidProblem):
            raise ProblemCommandError(explain_refusal(err.__cause__)) from None
        raise
    p = created.problem
    typer.echo(json.dumps({
        "chain_id": p.chain_id.hex(),
        "directory": str(created.directory),
        "secret": str(created.secret_path),
        "m": p.tuples[0].m,
        "m_h": p.holdout.m_h if p.holdout else 0,
        "holdout_margin_ppb": p.params.holdout_margin_ppb,
        "consistency_ppb": p.params.consistency_ppb,
        "train": len(created.split.train_y),
        "input_spec": problem_summary(p.proposal)["params"]["input_spec"],
        "classes": list(ds.class_names) or [str(c) for c in range(ds.num_classes)],
    }, indent=2))


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
