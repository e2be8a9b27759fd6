"""``daimon-node problem``: create a problem from a labelled dataset, show one.

``create`` is the contributor's kit (``daimon_node.problem_kit``): it writes
the published problem directory and, apart from it, a 0600 file with the
hidden test labels and the holdout's salt and labels.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from .errors import DaimonError

app = typer.Typer(help="Create and inspect classification problems.", no_args_is_help=True)


class ProblemCommandError(DaimonError):
    """A problem command got a bad option."""


@app.command("create")
def create_cmd(
    dataset: str = typer.Option("digits", "--dataset", help="Bundled dataset (digits)."),
    out: Path = typer.Option(..., "--out", "-o", help="Problem directory to write (published)."),
    key_dir: Path = typer.Option(Path(".daimon"), "--key-dir", "-k", help="Creator's data directory."),
    secret_out: Optional[Path] = typer.Option(None, "--secret-out", help="Private file for x_t, x_h and the salt "
                                              "(default: OUT.secret.json beside OUT, mode 0600)."),
    name: str = typer.Option("digits", "--name"),
    symbol: str = typer.Option("DIG", "--symbol", help="Token symbol."),
    test_fraction: float = typer.Option(0.3, "--test-fraction", help="Share of the data in Z (hidden labels x_t)."),
    holdout_fraction: float = typer.Option(0.0, "--holdout-fraction", help="Share in a sealed holdout Z_h (0: none)."),
    t_p: int = typer.Option(60, "--t-p", help="Problem-definition period, seconds."),
    t_b: int = typer.Option(60, "--t-b", help="Competition period, seconds."),
    grace: int = typer.Option(30, "--grace", help="Seconds after a period before out-of-turn commits."),
    delta_ppb: int = typer.Option(1_000_000, "--delta-ppb", help="Required improvement over d_c, ppb."),
    tie_margin_ppb: int = typer.Option(100_000, "--tie-margin-ppb", help="Top-two score gap that is a tie, ppb."),
    max_ambiguous: Optional[int] = typer.Option(None, "--max-ambiguous", help="Default: 1% of labelled positions."),
    max_model_bytes: int = typer.Option(16 * 2**20, "--max-model-bytes"),
    max_infer_ms: int = typer.Option(10_000, "--max-infer-ms", help="Wall-time limit of one model run, ms."),
    season_periods: int = typer.Option(4, "--season-periods", help="Season length S with a holdout."),
    committer: Optional[list[str]] = typer.Option(None, "--committer", help="Committer public key (hex); "
                                                  "repeat; default: the creator."),
    t0: Optional[int] = typer.Option(None, "--t0", help="Creation time, Unix seconds (default: now)."),
    del_steps: int = typer.Option(0, "--del-steps", help="Train the DEL this many steps with del_embed (needs "
                                  "torch); 0: untrained random-projection DEL."),
    del_max_seconds: float = typer.Option(0.0, "--del-max-seconds", help="Stop DEL training after this long (0: no cap)."),
    seed: int = typer.Option(0, "--seed", help="Split and DEL seed."),
) -> None:
    """Create a problem: split the dataset, build the DEL, sign the proposal and test tuple."""
    from .keystore import load_key
    from .problem_kit import ProblemOptions, create_problem

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
    )
    created = create_problem(out, keys, dataset=dataset, test_fraction=test_fraction,
                             holdout_fraction=holdout_fraction, opts=opts, secret_path=secret_out)
    p = created.problem
    typer.echo(json.dumps({
        "chain_id": p.chain_id.hex(),
        "directory": str(created.directory),
        "secret": str(created.secret_path),
        "m": p.tuples[0].m,
        "m_h": p.holdout.m_h if p.holdout else 0,
        "train": len(created.split.train_y),
    }, indent=2))


@app.command("show")
def show_cmd(
    directory: Path = typer.Argument(..., help="Problem directory."),
) -> None:
    """Check a problem directory (signatures, content ids) and print its summary as JSON."""
    from .problem_kit import load_problem, problem_summary

    problem = load_problem(directory)
    summary = problem_summary(problem.proposal, problem.dels[0])
    summary["directory"] = str(directory)
    typer.echo(json.dumps(summary, indent=2))
