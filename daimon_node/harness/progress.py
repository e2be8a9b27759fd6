"""What a local testnet looks like while it runs: one RPC poll per node and the table of them.

The `testnet` command and the demo both show it; it lives with the harness, not the CLI, so that
the demo does not import the command line.
"""

from __future__ import annotations

from typing import Any

from rich.table import Table

from daimon_node.errors import DaimonError
from daimon_node.harness.testnet import TestnetPlan
from daimon_node.rpc.client import RpcClient


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
