"""``daimon-node testnet``: N node processes on 127.0.0.1 with live progress."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.live import Live
from rich.table import Table

from .client import RpcClient
from .errors import DaimonError
from .testnet import Testnet, TestnetPlan, prepare_testnet


def poll_node(port: int, chain: bytes) -> dict[str, Any]:
    """One node's view over RPC; ``{"down": reason}`` when it does not answer."""
    try:
        with RpcClient(f"http://127.0.0.1:{port}", timeout=2.0) as client:
            info, height, best, period = client.batch([
                ("daimon_nodeInfo", []),
                ("daimon_blockNumber", ["0x" + chain.hex()]),
                ("daimon_bestModel", ["0x" + chain.hex()]),
                ("daimon_period", ["0x" + chain.hex()]),
            ])
    except (DaimonError, OSError) as exc:
        return {"down": str(exc)[:40]}
    head = next((c["head"] for c in info.get("chains", []) if c["chain"] == "0x" + chain.hex()), "")
    return {"height": height, "head": head, "peers": info.get("peers", 0),
            "best": None if not isinstance(best, dict) else best.get("distance_ppb"),
            "period": period.get("period") if isinstance(period, dict) else None}


def progress_table(plan: TestnetPlan, views: list[dict[str, Any]], elapsed: float) -> Table:
    table = Table(title=f"DaiMoN testnet: {len(views)} nodes, chain {plan.chain_id.hex()[:16]}, {elapsed:.0f} s")
    for col in ("node", "rpc", "height", "head", "peers", "period", "best distance d"):
        table.add_column(col)
    for i, v in enumerate(views):
        if "down" in v:
            table.add_row(str(i), str(plan.rpc_ports[i]), "-", "down", "-", "-", v["down"])
            continue
        best = "-" if v["best"] is None else f"{v['best'] / 1e9:.4f}"
        table.add_row(str(i), str(plan.rpc_ports[i]), str(v["height"]), str(v["head"])[:12], str(v["peers"]),
                      str(v["period"]), best)
    return table


def testnet(
    nodes: int = typer.Option(4, "--nodes", "-n", min=2, max=64, help="How many node processes."),
    data_dir: Path = typer.Option(Path(".daimon/testnet"), "--dir", "-d", help="Testnet directory (must be new)."),
    t_p: int = typer.Option(20, help="Problem-definition period T_p, seconds."),
    t_b: int = typer.Option(8, help="Competition period T_b, seconds."),
    grace: int = typer.Option(4, help="Seconds after a period ends before out-of-turn commits."),
    base_port: int = typer.Option(47000, help="First p2p port; RPC ports start at base+100."),
    duration: float = typer.Option(0.0, help="Stop after this many seconds (0 = until Ctrl-C)."),
    until_height: int = typer.Option(0, help="Stop once every node reaches this height (0 = never)."),
    holdout: float = typer.Option(0.0, help="Fraction of digits kept as a sealed holdout (0 = none)."),
) -> None:
    """Start a local multi-node testnet (a digits problem, improvers, validators, rotating committers)."""
    console = Console()
    console.print(f"preparing {nodes} nodes in {data_dir} (keys, problem, example models, configs) ...")
    plan = prepare_testnet(data_dir, nodes, t_p=t_p, t_b=t_b, grace=grace, base_port=base_port,
                           holdout_fraction=holdout)
    net = Testnet(plan)
    net.start()
    console.print(f"started; logs in {data_dir}/node<i>/node.log; Ctrl-C stops every node")
    started = time.monotonic()
    try:
        with Live(console=console, refresh_per_second=2) as live:
            while True:
                views = [poll_node(p, plan.chain_id) for p in plan.rpc_ports]
                live.update(progress_table(plan, views, time.monotonic() - started))
                if duration and time.monotonic() - started >= duration:
                    break
                if until_height and all(v.get("height", -1) >= until_height for v in views):
                    break
                time.sleep(1.0)
    except KeyboardInterrupt:
        console.print("stopping ...")
    finally:
        net.stop()
    console.print("all nodes stopped")
