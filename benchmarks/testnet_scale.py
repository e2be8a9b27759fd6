"""How many node processes on this machine still agree on the head within two periods?

For each N (default 4, 8, 12, 16) this prepares a testnet (``daimon_node.harness.testnet``:
keys, a digits problem, example models, one config per node on 127.0.0.1), starts
the N nodes as separate processes, and polls every node's ``daimon_nodeInfo`` over
JSON-RPC once a second. Each block (a new head hash first seen at some node) must be
the head of *every* node within two competition periods (2 * T_b) of being seen;
the time to agreement is the time from first sight to the first poll where all N
nodes report that head (or a later head all of them share). CPU% (process + its
sandbox children, from the end of T_p to the end) and RSS (peak) are read per node with psutil.
Every testnet is stopped (SIGTERM to all nodes at once, SIGKILL after 30 s) in ``finally``.

    python benchmarks/testnet_scale.py            # N = 4 8 12 16, one bootstrap address each
    python benchmarks/testnet_scale.py --sizes 4 16 --periods 4
    python benchmarks/testnet_scale.py --sizes 16 --bootstrap 3 --no-dht   # the pre-DHT layout

Node i is given the address of the node before it only (``--bootstrap 1``): a line that the
Kademlia DHT must turn into a mesh. "min peers" is the fewest connections, "min gossip" the
fewest peers on the chain's blocks topic, both read at the end.

Node logs stay in benchmarks/out/testnet_scale/n<N>/node<i>/node.log.
Needs psutil (``pip install psutil``); the target is N = 16 (issue 7).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import tomllib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psutil  # noqa: E402
import tomli_w  # noqa: E402

from daimon_node.rpc.client import RpcClient  # noqa: E402
from daimon_node.errors import DaimonError  # noqa: E402
from daimon_node.proofs.problem_kit import load_problem  # noqa: E402
from daimon_node.harness.testnet import Testnet, prepare_testnet  # noqa: E402

TARGET_N = 16
OUT = Path(__file__).resolve().parent / "out" / "testnet_scale"


def poll(port: int, chain_hex: str) -> dict[str, Any]:
    """One node's head over RPC: {"height", "head", "peers"} or {"down": reason}."""
    try:
        with RpcClient(f"http://127.0.0.1:{port}", timeout=3.0) as client:
            info = client.call("daimon_nodeInfo")
    except (DaimonError, OSError) as exc:
        return {"down": str(exc)[:60]}
    for c in info.get("chains", []):
        if c["chain"] == chain_hex:
            return {"height": int(c["height"]), "head": c["head"], "peers": int(info.get("peers", 0)),
                    "gossip": int(c.get("gossip_peers", 0))}
    return {"height": -1, "head": "", "peers": int(info.get("peers", 0))}


@dataclass
class Usage:
    """CPU time and peak RSS of one node's process tree."""

    proc: psutil.Process
    cpu0: float = 0.0
    cpu: float = 0.0
    t0: float = 0.0
    t: float = 0.0
    rss_peak: int = 0

    def sample(self) -> None:
        try:
            procs = [self.proc, *self.proc.children(recursive=True)]
        except psutil.Error:
            return
        cpu, rss = 0.0, 0
        for p in procs:
            try:
                ct = p.cpu_times()
                cpu += ct.user + ct.system + (ct.children_user + ct.children_system if p is self.proc else 0.0)
                rss += p.memory_info().rss
            except psutil.Error:
                continue
        now = time.monotonic()
        if self.t0 == 0.0:
            self.cpu0, self.t0 = cpu, now
        self.cpu, self.t = cpu, now
        self.rss_peak = max(self.rss_peak, rss)

    @property
    def cpu_percent(self) -> float:
        return 100.0 * (self.cpu - self.cpu0) / (self.t - self.t0) if self.t > self.t0 else 0.0


@dataclass
class Result:
    n: int
    agreed: bool
    blocks: int  # blocks seen after every node was up
    agree_max_s: float | None
    agree_mean_s: float | None
    height_min: int
    height_max: int
    peers_min: int
    gossip_min: int
    peers_mean: float
    cpu_mean: float
    cpu_max: float
    rss_mean_mib: float
    rss_max_mib: float
    load: tuple[float, float]
    up_s: float | None  # from starting the processes to every node answering RPC
    up_margin_s: float | None  # how long before T_p's end (the Problem block) every node was up
    rivals: int  # heights at which more than one block was seen (forks)
    notes: list[str] = field(default_factory=list)


def free_port_block(start: int, count: int) -> bool:
    for port in range(start, start + count):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


def pick_base_port(n: int, first: int) -> int:
    base = first
    while not (free_port_block(base, n) and free_port_block(base + 100, n)):
        base += 200
    return base


def stop_all(net: Testnet, timeout: float = 30.0) -> None:
    """SIGTERM every node at once, then wait (Testnet.stop waits for each in turn); SIGKILL stragglers."""
    for proc in net.procs.values():
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for i, proc in list(net.procs.items()):
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            print(f"  node {i} ignored SIGTERM for {timeout:.0f} s; killing it", flush=True)
            proc.kill()
            proc.wait()
        net.procs.pop(i)
    net.stop()  # nothing left; kept so any node started later is stopped too


def run_one(n: int, *, t_p: int, t_b: int, grace: int, periods: int, base_port: int, start_delay: int | None,
            bootstrap: int, dht: bool) -> Result:
    directory = OUT / f"n{n}"
    shutil.rmtree(directory, ignore_errors=True)
    base = pick_base_port(n, base_port)
    if start_delay is None:
        # t0 is fixed before prepare_testnet trains the example models, and N processes importing
        # onnxruntime/libp2p take a while on 2 loaded cores: every node must be up and meshed
        # before T_p ends, or each committer seals its own Problem block.
        start_delay = 40 + 5 * n
    plan = prepare_testnet(directory, n, t_p=t_p, t_b=t_b, grace=grace, base_port=base, start_delay=start_delay,
                           bootstrap_peers=bootstrap)
    for path in plan.configs:
        cfg = tomllib.loads(path.read_text())
        cfg["p2p"]["dht"] = dht
        path.write_text(tomli_w.dumps(cfg))
    chain_hex = "0x" + plan.chain_id.hex()
    problem_t0 = float(load_problem(plan.problem_dir).params.t0)  # period 0 (T_p) starts here
    net = Testnet(plan)
    notes: list[str] = []
    load_start = os.getloadavg()[0]
    first_seen: dict[str, tuple[float, int]] = {}  # head -> (monotonic first sight, height)
    agreed_at: dict[str, float] = {}
    usage: list[Usage] = []
    views: list[dict[str, Any]] = []
    all_up_at: float | None = None
    up_wall: float | None = None
    started_wall = time.time()
    active = False
    try:
        net.start()
        started_wall = time.time()
        usage = [Usage(psutil.Process(net.procs[i].pid)) for i in range(n)]
        started = time.monotonic()
        # Long enough for the Problem block (end of T_p) plus `periods` competition periods.
        budget = max(0.0, problem_t0 - time.time()) + t_p + periods * t_b + 2 * t_b + 10
        with ThreadPoolExecutor(max_workers=min(n, 16)) as pool:
            while time.monotonic() - started < budget:
                tick = time.monotonic()
                views = list(pool.map(lambda p: poll(p, chain_hex), plan.rpc_ports))
                now = time.monotonic()
                if not active and time.time() >= problem_t0 + t_p:
                    active = True  # measure CPU from the Problem block on, not the idle wait for t0
                    load_start = os.getloadavg()[0]
                    for u in usage:
                        u.t0 = 0.0
                for u in usage:
                    u.sample()
                if all_up_at is None and all("down" not in v for v in views):
                    all_up_at = now
                    up_wall = time.time()
                for v in views:
                    head = v.get("head")
                    if head and head not in first_seen:
                        first_seen[head] = (now, v["height"])
                heads = {v.get("head") for v in views}
                if len(heads) == 1 and "" not in heads and None not in heads:
                    (common,) = heads
                    h_common = views[0]["height"]
                    for head, (seen, height) in first_seen.items():
                        if head not in agreed_at and height <= h_common:
                            agreed_at[head] = now
                dead = [i for i, p in net.procs.items() if p.poll() is not None]
                if dead:
                    notes.append(f"node(s) {dead} exited early (rc {[net.procs[i].returncode for i in dead]})")
                    break
                time.sleep(max(0.0, 1.0 - (time.monotonic() - tick)))
        for u in usage:
            u.sample()
    finally:
        stop_all(net)
    load_end = os.getloadavg()[0]
    # Judge only blocks first seen after every node answered (earlier ones had no one to agree with).
    judged = {h: s for h, s in first_seen.items() if all_up_at is not None and s[0] >= all_up_at}
    waits, late = [], []
    end = time.monotonic()
    for head, (seen, height) in judged.items():
        if head in agreed_at:
            waits.append(agreed_at[head] - seen)
            if agreed_at[head] - seen > 2 * t_b:
                late.append(f"height {height} agreed after {agreed_at[head] - seen:.1f} s")
        elif end - seen > 2 * t_b:
            late.append(f"height {height} ({head[:10]}) never agreed")
    if all_up_at is None:
        notes.append("not every node answered RPC")
    if not judged:
        notes.append("no block committed while all nodes were up")
    notes.extend(late)
    by_height: dict[int, set[str]] = {}
    for head, (_, height) in first_seen.items():
        by_height.setdefault(height, set()).add(head)
    rivals = sum(1 for hs in by_height.values() if len(hs) > 1)
    heights = [v.get("height", -1) for v in views if "down" not in v] or [-1]
    peers = [v.get("peers", 0) for v in views if "down" not in v] or [0]
    gossip = [v.get("gossip", 0) for v in views if "down" not in v] or [0]
    cpus = [u.cpu_percent for u in usage] or [0.0]
    rss = [u.rss_peak / 2**20 for u in usage] or [0.0]
    return Result(
        n=n, agreed=bool(judged) and not late and all_up_at is not None,
        blocks=len(judged),
        agree_max_s=max(waits) if waits else None, agree_mean_s=sum(waits) / len(waits) if waits else None,
        height_min=min(heights), height_max=max(heights), peers_min=min(peers),
        gossip_min=min(gossip), peers_mean=sum(peers) / len(peers),
        cpu_mean=sum(cpus) / len(cpus), cpu_max=max(cpus), rss_mean_mib=sum(rss) / len(rss), rss_max_mib=max(rss),
        load=(load_start, load_end), notes=notes,
        up_s=None if up_wall is None else up_wall - started_wall,
        up_margin_s=None if up_wall is None else problem_t0 + t_p - up_wall, rivals=rivals,
    )


def fmt(x: float | None, spec: str = ".1f") -> str:
    return "-" if x is None else format(x, spec)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[4, 8, 12, 16])
    ap.add_argument("--t-p", type=int, default=20)
    ap.add_argument("--t-b", type=int, default=8)
    ap.add_argument("--grace", type=int, default=4)
    ap.add_argument("--periods", type=int, default=5, help="competition periods to watch after the Problem block")
    ap.add_argument("--base-port", type=int, default=12000,
                    help="first port tried (below the kernel's ephemeral range, which outgoing connections take)")
    ap.add_argument("--start-delay", type=int, default=None, help="seconds to the problem's t0 (default 40 + 5 N)")
    ap.add_argument("--bootstrap", type=int, default=1, help="bootstrap addresses per node (the nodes before it)")
    ap.add_argument("--no-dht", action="store_true", help="turn the Kademlia DHT off (p2p.dht = false)")
    ap.add_argument("--stop-on-fail", action="store_true", help="skip larger N once one N fails")
    args = ap.parse_args()

    cores = psutil.cpu_count(logical=True)
    print(f"testnet_scale: sizes {args.sizes}, T_p {args.t_p} s, T_b {args.t_b} s, grace {args.grace} s, "
          f"{args.periods} periods after the Problem block; {args.bootstrap} bootstrap address(es) per node, "
          f"DHT {'off' if args.no_dht else 'on'}; {cores} CPUs, "
          f"load avg {os.getloadavg()[0]:.2f} at start; logs in {OUT}/n<N>/node<i>/node.log", flush=True)
    results: list[Result] = []
    signal.signal(signal.SIGTERM, _interrupt)  # SIGTERM too runs the finally that stops the nodes
    for n in args.sizes:
        r = run_one(n, t_p=args.t_p, t_b=args.t_b, grace=args.grace, periods=args.periods,
                    base_port=args.base_port, start_delay=args.start_delay, bootstrap=args.bootstrap,
                    dht=not args.no_dht)
        results.append(r)
        print(f"  N={n}: agreed={'yes' if r.agreed else 'no'} blocks={r.blocks} "
              f"height {r.height_min}..{r.height_max} load {r.load[0]:.1f}->{r.load[1]:.1f} "
              + ("; ".join(r.notes) if r.notes else ""), flush=True)
        if args.stop_on_fail and not r.agreed:
            break

    header = ("N", "agreed", "blocks", "forks", "up s", "up before T_p end s", "agree max s", "agree mean s",
              "height", "min peers", "mean peers", "min gossip",
              "CPU% mean", "CPU% max", "RSS MiB mean", "RSS MiB max", "load 1m")
    rows = [(str(r.n), "yes" if r.agreed else "no", str(r.blocks), str(r.rivals), fmt(r.up_s), fmt(r.up_margin_s),
             fmt(r.agree_max_s), fmt(r.agree_mean_s),
             f"{r.height_min}..{r.height_max}", str(r.peers_min), fmt(r.peers_mean), str(r.gossip_min), fmt(r.cpu_mean), fmt(r.cpu_max),
             fmt(r.rss_mean_mib, ".0f"), fmt(r.rss_max_mib, ".0f"), f"{r.load[0]:.1f}->{r.load[1]:.1f}")
            for r in results]
    widths = [max(len(h), *(len(row[k]) for row in rows)) for k, h in enumerate(header)]
    print()
    print("  ".join(h.rjust(w) for h, w in zip(header, widths)))
    for row in rows:
        print("  ".join(c.rjust(w) for c, w in zip(row, widths)))
    ok = [r.n for r in results if r.agreed]
    largest = max(ok) if ok else None
    print(f"\nlargest N agreeing on the head within 2 periods (2 x T_b = {2 * args.t_b} s): "
          f"{largest if largest is not None else 'none'}  (target N = {TARGET_N}: "
          f"{'met' if largest is not None and largest >= TARGET_N else 'not met'})")
    print("CPU% is per node process tree (100% = one core) from the end of T_p on; RSS is the peak of node + sandbox.")


if __name__ == "__main__":
    main()
