"""``daimon-node problem add-season`` and ``problem add-tuple``: new data for a running problem.

``add-season`` seals a new holdout from new data at any time (a ``NewHoldout`` from the
contributor's key: it opens at once when no season is open, else after the ones already
sealed); the contributor's node then reveals it in its window with the secret file.
``add-tuple`` adds a test tuple during T_p (``daimon_submitTestTuple``): the committer of
period 0 carries it in the Problem block and every proof is then scored on it too.

Both read data as ``problem create --data`` does, check what the chain would refuse before
they sign (the contributor's key, T_p, the bond, the seasons kept ahead), and say in one
line why they stop. Run them against the contributor's own node (started with the problem
directory): it serves the new tuple's inputs and DEL, and reveals the new season.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import typer

from chain.errors import InvalidBlock, TupleWindowClosed

from daimon_node.cli.chain import (
    ChainCommandError,
    FeeOption,
    JsonOption,
    KeyDirOption,
    RpcOption,
    TimeoutOption,
    WaitOption,
    connect,
    echo_json,
    hex0x,
    report_sent,
    resolve_fee,
    rpc_errors_as_one_line,
    send_transaction,
)
from daimon_node.cli.txcommand import check_can_pay, option_group

ProblemDirOption = typer.Option(..., "--problem", help="The problem directory (made by 'problem create').")
SecretOption = typer.Option(None, "--secret", help="The contributor's secret file (default: PROBLEM.secret.json).")
DataOption = typer.Option(None, "--data", help="New labelled data: an .npz with X and y, a .csv/.tsv (with "
                          "--label-column), or a folder with one subfolder of PNG/JPEG images per class.")
ImagesOption = typer.Option(None, "--images", help="IDX images file; goes with --labels.")
LabelsOption = typer.Option(None, "--labels", help="IDX labels file; goes with --images.")
LabelColumnOption = typer.Option(None, "--label-column", help="CSV: the column holding the labels.")
ImageSizeOption = typer.Option(None, "--image-size", help="Image folder: resize every image to W or WxH pixels.")
GrayscaleOption = typer.Option(None, "--grayscale/--rgb", help="Image folder: (H, W) or (H, W, 3) uint8 inputs.")


class SeasonCommandError(ChainCommandError):
    """``add-season`` or ``add-tuple`` cannot go on; the message says why in one line."""


@dataclass(frozen=True)
class NewData:
    """Where the new data of a season or a tuple is (the options both commands take)."""

    data: Optional[Path]
    images: Optional[Path]
    labels: Optional[Path]
    label_column: Optional[str]
    image_size: Optional[str]
    grayscale: Optional[bool]


new_data_options = option_group(NewData, "new", (
    ("data", Optional[Path], DataOption), ("images", Optional[Path], ImagesOption),
    ("labels", Optional[Path], LabelsOption), ("label_column", Optional[str], LabelColumnOption),
    ("image_size", Optional[str], ImageSizeOption), ("grayscale", Optional[bool], GrayscaleOption),
))


def load_new_data(new: NewData) -> Any:
    """The new data, read by ``problem create``'s loaders; never the bundled set (it overlaps the problem's)."""
    from daimon_node.proofs.datasets import DataOptions, parse_image_size, select_dataset

    if new.data is None and new.images is None:
        raise SeasonCommandError("give the new data with --data PATH (or --images FILE --labels FILE)")
    return select_dataset(None, new.data, new.images, new.labels,
                          DataOptions(new.label_column, parse_image_size(new.image_size), new.grayscale))


def contributor_context(problem_dir: Path, secret: Optional[Path], key_dir: Path) -> tuple[Any, Path, Any]:
    """The problem, the secret file's path and the key, which must be the problem's contributor."""
    from daimon_node.keystore import load_key
    from daimon_node.proofs.problem_kit import load_problem

    problem = load_problem(problem_dir)
    keys = load_key(key_dir)
    if keys.public_key != problem.proposal.creator:
        raise SeasonCommandError(f"key {keys.public_key.hex()[:16]} in {key_dir} is not the problem's contributor "
                                 f"({problem.proposal.creator.hex()[:16]}): only it may add seasons and tuples")
    return problem, secret or problem_dir.with_name(problem_dir.name + ".secret.json"), keys


def season_after(season: dict[str, Any]) -> int:
    """The season a holdout sealed now becomes: the closed one waiting, else after those sealed ahead."""
    if not season["sealed"]:
        return int(season["index"])
    return int(season["index"]) + int(season.get("sealed_ahead", 0)) + 1


def check_may_add_season(summary: dict[str, Any]) -> dict[str, Any]:
    """The chain's season record, if the chain could take one more sealed holdout."""
    from chain.holdouts import MAX_SEALED_AHEAD

    if "d_c_ppb" not in summary:
        raise SeasonCommandError("the chain has no Problem block yet: seasons are sealed once it runs")
    season = summary.get("season")
    if season is None:
        raise SeasonCommandError("this problem has no seasons (it was created without a holdout)")
    if season["sealed"] and int(season.get("sealed_ahead", 0)) >= MAX_SEALED_AHEAD:
        raise SeasonCommandError(f"{MAX_SEALED_AHEAD} seasons are already sealed ahead of season {season['index']}; "
                                 "add this one once the next opens")
    return season  # type: ignore[no-any-return]


@new_data_options
def add_season_cmd(
    new: NewData,
    problem: Path = ProblemDirOption,
    secret: Optional[Path] = SecretOption,
    key_dir: Path = KeyDirOption,
    fee: Optional[str] = FeeOption,
    rpc: str = RpcOption,
    wait: bool = WaitOption,
    timeout: float = TimeoutOption,
    as_json: bool = JsonOption,
) -> None:
    """Seal a new season's holdout from new data (NewHoldout; locks one more contributor bond)."""
    from chain.payloads import NewHoldout

    from daimon_node.proofs.season_kit import seal_holdout

    p, secret_path, keys = contributor_context(problem, secret, key_dir)
    ds = load_new_data(new)
    chain = p.chain_id
    with connect(rpc) as client:
        summary = client.get_problem(chain)
        season = check_may_add_season(summary)
        params = summary["params"]
        fee_units = resolve_fee(client, chain, fee, params)
        check_can_pay(client, chain, keys.address_bytes, int(params["contributor_bond"]) + fee_units,
                      "the contributor bond + fee", params)
        sealed, number = seal_holdout(p, problem, secret_path, ds)
        sent = send_transaction(client, chain, key_dir, NewHoldout(sealed), fee_units, wait=wait, timeout=timeout,
                                params=params)
    report_sent(sent, as_json, {"chain": hex0x(chain), "type": "new_holdout", "season": season_after(season),
                                "m_h": sealed.m_h, "z_h_id": hex0x(sealed.z_h_id), "secret_entry": number,
                                "bond": str(params["contributor_bond"])})


@new_data_options
def add_tuple_cmd(
    new: NewData,
    problem: Path = ProblemDirOption,
    secret: Optional[Path] = SecretOption,
    key_dir: Path = KeyDirOption,
    rpc: str = RpcOption,
    del_n: int = typer.Option(256, "--del-n", help="Output size n of the tuple's random-projection DEL."),
    seed: int = typer.Option(0, "--seed", help="The DEL's seed."),
    as_json: bool = JsonOption,
) -> None:
    """Add a test tuple during T_p: it joins the test set every proof is scored on."""
    from chain.outcome import memory_env
    from chain.tuples import check_extra_tuple, check_tuple_window

    from daimon_node.proofs.problem_kit import read_content
    from daimon_node.proofs.season_kit import make_tuple

    p, secret_path, keys = contributor_context(problem, secret, key_dir)
    ds = load_new_data(new)
    chain = p.chain_id
    with connect(rpc) as client:
        try:
            check_tuple_window(p.params, started=client.block_number(chain) >= 0, now=time.time())
        except TupleWindowClosed:
            raise SeasonCommandError("T_p is over (the Problem block exists or is due): test tuples are added "
                                     "only during T_p") from None
        tup = make_tuple(p, problem, secret_path, ds, keys, del_n=del_n, seed=seed)
        try:  # the chain's own rule, before the node sees it
            check_extra_tuple(p.proposal, p.tuples, tup, memory_env({tup.del_id: read_content(problem, tup.del_id)}))
        except InvalidBlock as exc:
            raise SeasonCommandError(f"the chain would refuse this tuple ({type(exc).__name__}): {exc}") from None
        digest = client.submit_test_tuple(chain, tup.encode())
    out = {"chain": hex0x(chain), "tuple": digest, "m": tup.m, "z_id": hex0x(tup.z_id), "del_id": hex0x(tup.del_id)}
    if as_json:
        echo_json(out)
    else:
        typer.echo(f"test tuple {digest} sent (m={tup.m}); the Problem block carries it at the end of T_p")


def register(problem_app: typer.Typer) -> None:
    """Attach the commands to ``daimon-node problem``."""
    problem_app.command("add-season")(rpc_errors_as_one_line(add_season_cmd))
    problem_app.command("add-tuple")(rpc_errors_as_one_line(add_tuple_cmd))
