"""JSON-RPC throughput: ``daimon_blockNumber`` requests/s and p99 latency against the real server.

The server runs in a subprocess with the node's own ``NodeBackend`` over a real LevelDB
``ChainStore`` holding a devnet chain (Problem block, validator bonds, one anchored and
settled improvement; ``daimon_node.harness.devnet_node``), so each request does what a node
does: h11 parse, dispatch, a store read of the head height, JSON reply.
Load comes from ``wrk`` (Debian package ``wrk``: 1 thread, 16 keep-alive connections,
8 s, as in notes/http.md) or, when wrk is absent, from a Python generator with several
processes and connections (slower itself, so it understates the server).

    python benchmarks/rpc_bench.py [--duration 8] [--connections 16]

Target (issue 7): >= 2,000 req/s on 2 cores, load generator sharing the cores.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TARGET_RPS = 2000


# --- server side (subprocess) --------------------------------------------------------------
def serve(db_dir: str) -> None:
    import trio

    from chain.devnet import Devnet, DevnetConfig, corrupt
    from daimon_node.harness.devnet_node import devnet_backend
    from daimon_node.rpc.server import RpcServer

    devnet = Devnet(DevnetConfig(m=200))
    devnet.start()
    devnet.bond_validators()
    devnet.improve(devnet.improver_keys[0], corrupt(devnet.truth, 0.1, 10, seed=1))
    backend = devnet_backend(Path(db_dir) / "node", devnet)  # the node's own backend over its LevelDB store
    height = backend.api.chains.chains[devnet.chain_id].store.height

    async def main() -> None:
        server = RpcServer(backend)
        async with trio.open_nursery() as nursery:
            port = await nursery.start(server.serve, "127.0.0.1", 0)
            print(json.dumps({"port": port, "chain": "0x" + devnet.chain_id.hex(), "height": height}), flush=True)

    trio.run(main)


# --- reference ceiling (subprocess) --------------------------------------------------------------
def serve_bare() -> None:
    """A bare trio keep-alive responder with a canned reply: no parser, no dispatch.

    Not a server anyone should use; it is the ceiling of notes/http.md measured again in
    the same minute as the real server, so that a figure taken while other work loads
    the machine can be read as a fraction of what the machine gave at that moment.
    """
    import trio

    reply = (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 35\r\n\r\n"
             b'{"jsonrpc":"2.0","id":1,"result":4}')

    async def handle(stream: trio.SocketStream) -> None:
        buffer = b""
        try:
            while data := await stream.receive_some(65536):
                buffer += data
                while (end := buffer.find(b"\r\n\r\n")) >= 0:
                    length = int(buffer[:end].lower().split(b"content-length:")[1].split(b"\r\n")[0])
                    if len(buffer) < end + 4 + length:
                        break
                    buffer = buffer[end + 4 + length:]
                    await stream.send_all(reply)
        except trio.BrokenResourceError:
            pass

    async def main() -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        print(json.dumps({"port": listeners[0].socket.getsockname()[1]}), flush=True)
        await trio.serve_listeners(handle, listeners)

    trio.run(main)


# --- load generation ---------------------------------------------------------------------------
def run_wrk(port: int, body: str, duration: int, connections: int) -> tuple[float, float, str]:
    script = Path(tempfile.mkdtemp()) / "post.lua"
    script.write_text('wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
                      f"wrk.body = {json.dumps(body)}\n")
    out = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency", "-s", str(script),
                          f"http://127.0.0.1:{port}/"], capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    m = re.search(r"99%\s+([\d.]+)(us|ms|s)\b", out)
    assert m is not None, out
    p99_ms = float(m.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[m.group(2)]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)|Socket errors: .*", out)
    return rps, p99_ms, (errors.group(0) if errors else "")


def _py_worker(port: int, body: bytes, duration: float, conns: int, queue: "mp.Queue[tuple[int, list[float]]]") -> None:
    import http.client
    import threading

    latencies: list[float] = []
    lock = threading.Lock()
    deadline = time.perf_counter() + duration

    def loop() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port)
        mine = []
        while time.perf_counter() < deadline:
            t = time.perf_counter()
            conn.request("POST", "/", body, {"Content-Type": "application/json"})
            conn.getresponse().read()
            mine.append(time.perf_counter() - t)
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=loop) for _ in range(conns)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    queue.put((len(latencies), latencies))


def run_python(port: int, body: str, duration: int, connections: int) -> tuple[float, float, str]:
    procs_n = 4
    queue: "mp.Queue[tuple[int, list[float]]]" = mp.Queue()
    procs = [mp.Process(target=_py_worker, args=(port, body.encode(), duration, max(1, connections // procs_n), queue))
             for _ in range(procs_n)]
    for p in procs:
        p.start()
    results = [queue.get() for _ in procs]
    for p in procs:
        p.join()
    lat = sorted(x for _, xs in results for x in xs)
    return len(lat) / duration, lat[int(0.99 * (len(lat) - 1))] * 1e3, ""


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU of ``pid`` (Linux /proc): what the server spent, whatever else runs."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=int, default=8)
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--no-baseline", action="store_true", help="skip the bare-trio reference run")
    ap.add_argument("--serve", metavar="DB_DIR", help=argparse.SUPPRESS)
    ap.add_argument("--serve-bare", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        serve(args.serve)
        return
    if args.serve_bare:
        serve_bare()
        return

    from daimon_node.rpc.client import RpcClient

    use_wrk = shutil.which("wrk") is not None
    load = run_wrk if use_wrk else run_python
    if use_wrk:
        tool = f"wrk -t1 -c{args.connections} -d{args.duration}s"
    else:
        tool = f"python load generator (4 processes, {args.connections} connections)"
        print("wrk is not installed (apt-get install -y wrk); falling back to a Python load generator, "
              "which itself costs CPU and understates the server")
    with tempfile.TemporaryDirectory() as tmp:
        server = subprocess.Popen([sys.executable, __file__, "--serve", tmp], stdout=subprocess.PIPE, text=True)
        try:
            assert server.stdout is not None
            info = json.loads(server.stdout.readline())
            port, chain = info["port"], info["chain"]
            with RpcClient(f"http://127.0.0.1:{port}") as client:
                assert client.block_number(chain) == info["height"]
            body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "daimon_blockNumber", "params": [chain]})
            avg = os.getloadavg()
            print(f"server: h11 + trio, ChainStore (LevelDB) at height {info['height']}; "
                  f"cores: {os.cpu_count()}; load average before: {avg[0]:.2f} {avg[1]:.2f} {avg[2]:.2f}")
            cpu_before = process_cpu_seconds(server.pid)
            rps, p99, errors = load(port, body, args.duration, args.connections)
            cpu_per_request = (process_cpu_seconds(server.pid) - cpu_before) / (rps * args.duration)
            print(f"daimon_blockNumber via {tool}: {rps:,.0f} req/s, p99 {p99:.2f} ms {errors}".rstrip())
            print(f"server CPU per request: {cpu_per_request * 1e6:.0f} us, i.e. about "
                  f"{1 / cpu_per_request:,.0f} req/s for each core the server gets to itself")
        finally:
            server.terminate()
            server.wait(timeout=10)
    if not args.no_baseline:
        bare = subprocess.Popen([sys.executable, __file__, "--serve-bare"], stdout=subprocess.PIPE, text=True)
        try:
            assert bare.stdout is not None
            bare_port = json.loads(bare.stdout.readline())["port"]
            bare_rps, bare_p99, _ = load(bare_port, body, args.duration, args.connections)
            print(f"reference, bare trio responder (no parsing, canned reply) via {tool}: {bare_rps:,.0f} req/s, "
                  f"p99 {bare_p99:.2f} ms; the RPC server got {rps / bare_rps:.0%} of it")
        finally:
            bare.terminate()
            bare.wait(timeout=10)
    verdict = "meets" if rps >= TARGET_RPS else "BELOW"
    print(f"target >= {TARGET_RPS:,} req/s on 2 cores: {verdict} ({rps / TARGET_RPS:.1f}x); "
          f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
