"""Soak: a 4-node testnet with improvers, validators, a runner and a paying client, for a while.

Node 1 improves (weak, then linear), node 2 improves (mlp); every node validates; nodes 0-2
commit in turn; node 3 runs the best model for a price; a client (node 0's key) pays node 3
through a payment channel with ``daimon-node infer`` every few seconds. Printed: RSS and open
file descriptors per node at start (once every node answers), after the warm-up, and at the end;
blocks, settlements, paid calls served (by the client's count and by what the runner redeemed on
chain), RPC calls made, and every ERROR or traceback line in any node's log.

Target (issue 13): no error line, and RSS growth under 10% from the end of the warm-up
(5 minutes) to the end.

    .venv/bin/python benchmarks/soak.py [--minutes 20] [--warmup-minutes 5] [--dir DIR]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import tomli_w

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from daimon_node.rpc.client import RpcClient  # noqa: E402
from daimon_node.errors import DaimonError  # noqa: E402
from daimon_node.proofs.problem_kit import load_train_split  # noqa: E402
from daimon_node.harness.testnet import Testnet, TestnetPlan, free_base_port, prepare_testnet, raise_on_sigterm, supervise  # noqa: E402

T_P, T_B, GRACE = 12, 8, 3
PRICE = 5
RSS_GROWTH_LIMIT = 0.10
ERROR_LINE = re.compile(r" ERROR |Traceback \(most recent call last\)|CRITICAL")


@dataclass
class Sample:
    rss_mib: list[float]
    fds: list[int]


@dataclass
class Client:
    """Pays the runner once per ``interval`` seconds on a thread; counts successes and failures."""

    plan: TestnetPlan
    chain: str
    runner: str
    inputs: Path
    interval: float = 3.0
    ok: int = 0
    failed: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        args = [sys.executable, "-m", "daimon_node.cli", "infer", "--problem", self.chain, "--input", str(self.inputs),
                "--max-price", str(PRICE), "--runner", self.runner, "--deposit", str(PRICE * 2000),
                "--key-dir", str(self.plan.directory / "node0"),
                "--rpc", f"http://127.0.0.1:{self.plan.rpc_ports[0]}", "--json"]
        while not self.stop.is_set():
            try:
                done = subprocess.run(args, capture_output=True, text=True, timeout=120)
                if done.returncode == 0:
                    self.ok += 1
                else:
                    self.failed.append(done.stderr.strip()[-200:])
            except subprocess.TimeoutExpired:
                self.failed.append("infer timed out after 120 s")
            self.stop.wait(self.interval)


def configure(plan: TestnetPlan) -> None:
    improvers = {1: ["weak", "linear"], 2: ["mlp"]}
    for i, path in enumerate(plan.configs):
        cfg = tomllib.loads(path.read_text())
        models = [str(plan.models[m]) for m in improvers.get(i, [])]
        cfg["roles"]["improver"].update(enabled=bool(models), models=models)
        if i == 3:
            cfg["roles"]["runner"] = {"enabled": True, "price": PRICE}
        path.write_text(tomli_w.dumps(cfg))


def call(port: int, method: str, *params: Any) -> Any:
    try:
        with RpcClient(f"http://127.0.0.1:{port}", timeout=5.0) as c:
            return c.call(method, *params)
    except (DaimonError, OSError):
        return None


def sample(net: Testnet) -> Sample:
    procs = [psutil.Process(net.procs[i].pid) for i in sorted(net.procs)]
    return Sample([p.memory_info().rss / 2**20 for p in procs], [p.num_fds() for p in procs])


def error_lines(plan: TestnetPlan) -> list[str]:
    found = []
    for i in range(len(plan.configs)):
        for name in ("node.log", "node.err"):
            path = plan.directory / f"node{i}" / name
            if path.exists():
                found += [f"node {i} {name}: {line}" for line in path.read_text("utf-8", "replace").splitlines()
                          if ERROR_LINE.search(line)]
    return found


def count_settlements(plan: TestnetPlan) -> int:
    return (plan.directory / "node0" / "node.log").read_text("utf-8", "replace").count("settlement settled")


def soak(directory: Path, minutes: float, warmup_minutes: float) -> int:
    started = time.monotonic()
    plan = prepare_testnet(directory, 4, t_p=T_P, t_b=T_B, grace=GRACE, base_port=free_base_port(4), start_delay=8)
    configure(plan)
    chain = "0x" + plan.chain_id.hex()
    runner = plan.keys[3].address
    np.save(directory / "x.npy", np.ascontiguousarray(load_train_split(plan.problem_dir)[0][:1]))
    client = Client(plan, chain, runner, directory / "x.npy")
    net = Testnet(plan)
    net.start()
    samples: dict[str, Sample] = {}
    rpc_calls = [0]
    thread: threading.Thread | None = None
    try:
        def tick(elapsed: float) -> bool:
            nonlocal thread
            rpc_calls[0] += len(plan.rpc_ports)
            up = [call(p, "daimon_nodeInfo") for p in plan.rpc_ports]
            if "start" not in samples and all(up):
                samples["start"] = sample(net)
            offers = call(plan.rpc_ports[0], "daimon_getOffers", chain) or []
            if thread is None and any(o.get("provider") == "0x" + runner for o in offers):
                thread = threading.Thread(target=client.run, daemon=True)
                thread.start()
            if "warm" not in samples and elapsed >= warmup_minutes * 60:
                samples["warm"] = sample(net)
            return False

        supervise(net, tick, limit=minutes * 60, interval=5.0)
        samples["end"] = sample(net)
        heights = [call(p, "daimon_blockNumber", chain) for p in plan.rpc_ports]
        channel = call(plan.rpc_ports[0], "daimon_getChannel", chain, "0x" + plan.keys[0].address, "0x" + runner)
    finally:
        client.stop.set()
        if thread is not None:
            thread.join(timeout=130)
        net.stop()
    errors = error_lines(plan)
    redeemed = int(channel["redeemed"]) // PRICE if channel else 0
    print(f"soak: 4 nodes, {minutes:.0f} min (warm-up {warmup_minutes:.0f} min), T_p={T_P}s T_b={T_B}s, "
          f"load {os.getloadavg()[0]:.1f} at the end, wall {time.monotonic() - started:.0f} s")
    print(f"{'node':>4} {'RSS start MiB':>14} {'RSS warm MiB':>13} {'RSS end MiB':>12} {'growth after warm-up':>21} "
          f"{'fds start':>9} {'fds end':>8}")
    worst = 0.0
    for i in range(4):
        s, w, e = samples["start"], samples.get("warm", samples["start"]), samples["end"]
        growth = (e.rss_mib[i] - w.rss_mib[i]) / w.rss_mib[i]
        worst = max(worst, growth)
        print(f"{i:>4} {s.rss_mib[i]:>14.1f} {w.rss_mib[i]:>13.1f} {e.rss_mib[i]:>12.1f} {growth:>20.1%} "
              f"{s.fds[i]:>9} {e.fds[i]:>8}")
    print(f"blocks: heights {heights}; settlements (node 0's log): {count_settlements(plan)}")
    print(f"paid calls: {client.ok} served to the client, {len(client.failed)} failed; "
          f"{redeemed} redeemed by the runner on chain; RPC polls made: {rpc_calls[0]}")
    for line in client.failed[:5]:
        print(f"  client failure: {line}")
    print(f"error lines in node logs: {len(errors)}")
    for line in errors[:20]:
        print(f"  {line}")
    met = not errors and worst < RSS_GROWTH_LIMIT
    print(f"target: no error line and RSS growth < {RSS_GROWTH_LIMIT:.0%} after warm-up: "
          f"worst growth {worst:.1%}, {len(errors)} error lines -> {'met' if met else 'NOT met'}")
    return 0 if met else 1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=20.0, help="how long the network runs")
    ap.add_argument("--warmup-minutes", type=float, default=5.0, help="RSS growth is measured from here to the end")
    ap.add_argument("--dir", type=Path, default=None, help="testnet directory (default: a temp dir)")
    args = ap.parse_args()
    raise_on_sigterm()
    if args.dir is not None:
        sys.exit(soak(args.dir, args.minutes, args.warmup_minutes))
    with tempfile.TemporaryDirectory() as tmp:
        sys.exit(soak(Path(tmp) / "soak", args.minutes, args.warmup_minutes))


if __name__ == "__main__":
    main()
