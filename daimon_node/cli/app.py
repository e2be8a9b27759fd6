"""The ``daimon-node`` command line.

Each command group lives in its own module and is attached here; errors a user
can hit are ``DaimonError`` subclasses, printed as one line with exit code 1.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from daimon_node.errors import DaimonError
from daimon_node.keystore import init_data_dir, load_key

app = typer.Typer(
    help="DaiMoN node: a peer-to-peer network that pays for provable classifier improvements.",
    no_args_is_help=True,
    add_completion=False,
)
keys_app = typer.Typer(help="Show the node's keys.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")

DirOption = typer.Option(Path(".daimon"), "--dir", "-d", help="Node data directory.")


@app.command()
def init(data_dir: Path = DirOption) -> None:
    """Create a data directory with a new persisted Ed25519 node key."""
    keys = init_data_dir(data_dir)
    typer.echo(f"initialised {data_dir}")
    typer.echo(f"address {keys.address}")


@keys_app.command("show")
def keys_show(
    data_dir: Path = DirOption,
    as_json: bool = typer.Option(False, "--json", help="Print a JSON object."),
) -> None:
    """Print the node's address and public key."""
    keys = load_key(data_dir)
    if as_json:
        typer.echo(json.dumps({"address": keys.address, "public_key": keys.public_key.hex()}))
    else:
        typer.echo(f"address     {keys.address}")
        typer.echo(f"public key  {keys.public_key.hex()}")


# --- command groups from other modules are attached below -------------------
from daimon_node.cli.start import start  # noqa: E402

app.command()(start)
from daimon_node.cli.testnet import testnet  # noqa: E402

app.command()(testnet)
from daimon_node.cli.model import app as model_app  # noqa: E402
app.add_typer(model_app, name="model")
from daimon_node.cli.problem import app as problem_app  # noqa: E402
from daimon_node.cli.season import register as register_season_commands  # noqa: E402

register_season_commands(problem_app)
app.add_typer(problem_app, name="problem")
from daimon_node.cli.embedding import app as del_app  # noqa: E402
app.add_typer(del_app, name="del")
from daimon_node.cli.transfer import rate, tx_app  # noqa: E402
from daimon_node.cli.status import status  # noqa: E402

app.command()(status)
app.command()(rate)
app.add_typer(tx_app, name="tx")

from daimon_node.cli.exits import channel_app, validator_app  # noqa: E402

app.add_typer(validator_app, name="validator")
app.add_typer(channel_app, name="channel")

from daimon_node.cli.market import infer, offers, runner_app  # noqa: E402
from daimon_node.cli.committer import app as committer_app  # noqa: E402

app.add_typer(committer_app, name="committer")

app.add_typer(runner_app, name="runner")
app.command()(infer)
app.command()(offers)


def main() -> None:
    try:
        app()
    except DaimonError as err:
        typer.echo(f"error: {err}", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
