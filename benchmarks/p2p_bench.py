"""p2p benchmark: gossip latency/loss on a 4-process mesh, content throughput.

Run: ``.venv/bin/python benchmarks/p2p_bench.py`` (about a minute). It prints, from
one run:

- gossip: 1,000 messages of 1 KB published at 100/s in total (round-robin over 4
  node processes, each connected to the other 3), delivery latency p50/p99 over
  all 3,000 expected deliveries and how many were lost; next to the round trip
  of 1 KB over a raw TCP echo between two processes;
- content: MB/s to fetch a 50 MiB object over ``/daimon/content/1`` (into the
  receiver's store, hash-checked, fsynced), next to a bare py-libp2p stream of
  the same bytes (memory to memory) and a raw TCP socket copy.

Targets (issue 5): gossip p99 <= 50 ms with 0 lost; content >= 80% of bare libp2p,
judged on the median of interleaved trials (9 rounds by default) against the bare
stream's median: best-of-N and single trials follow the other work on the box.
Latencies use wall-clock timestamps; every process is on this machine.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import AsyncExitStack
from pathlib import Path

import trio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from p2p import chain_topic  # noqa: E402
from p2p.testnode import ProcessNode  # noqa: E402

TOPIC = chain_topic(b"\xbe" * 32, "votes")
N_NODES = 4
N_MSGS = 1000
RATE = 100.0
MSG_SIZE = 1024
CONTENT_BYTES = 50 * 1024 * 1024
CHUNK = 1 << 20


def proc_cpu_s(pid: int) -> float:
    """User+system CPU seconds a process has used (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


# -- raw TCP ------------------------------------------------------------------
def tcp_echo_server() -> None:
    srv = socket.create_server(("127.0.0.1", 0))
    print(srv.getsockname()[1], flush=True)
    conn, _ = srv.accept()
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    while data := conn.recv(65536):
        conn.sendall(data)


def tcp_send_server(nbytes: int) -> None:
    srv = socket.create_server(("127.0.0.1", 0))
    print(srv.getsockname()[1], flush=True)
    conn, _ = srv.accept()
    block = os.urandom(CHUNK)
    sent = 0
    while sent < nbytes:
        n = min(CHUNK, nbytes - sent)
        conn.sendall(block[:n])
        sent += n
    conn.close()


def spawn_self(*args: str) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen([sys.executable, __file__, *args], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    return proc, int(proc.stdout.readline())


def bench_tcp_echo(rounds: int = 1000) -> list[float]:
    proc, port = spawn_self("--tcp-echo-server")
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            msg = b"x" * MSG_SIZE
            rtts = []
            for _ in range(rounds):
                t0 = time.perf_counter()
                s.sendall(msg)
                got = 0
                while got < MSG_SIZE:
                    got += len(s.recv(65536))
                rtts.append((time.perf_counter() - t0) * 1e3)
            return rtts
    finally:
        proc.kill()
        proc.wait()


def bench_tcp_copy(nbytes: int) -> float:
    proc, port = spawn_self("--tcp-send-server", str(nbytes))
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            buf = bytearray(CHUNK)
            got = 0
            t0 = time.perf_counter()
            while got < nbytes:
                n = s.recv_into(buf)
                if not n:
                    break
                got += n
            dt = time.perf_counter() - t0
        assert got == nbytes, (got, nbytes)
        return nbytes / dt / 1e6
    finally:
        proc.kill()
        proc.wait()


# -- bare libp2p stream -----------------------------------------------------------
BARE_PROTOCOL = "/bench/bare/1"


def bare_libp2p_server(nbytes: int) -> None:
    import multiaddr
    from libp2p import new_host
    from libp2p.crypto.ed25519 import create_new_key_pair

    async def main() -> None:
        host = new_host(key_pair=create_new_key_pair(b"\x55" * 32))
        block = os.urandom(CHUNK)

        async def handler(stream) -> None:  # type: ignore[no-untyped-def]
            await stream.read(1)
            sent = 0
            while sent < nbytes:
                n = min(CHUNK, nbytes - sent)
                await stream.write(block[:n])
                sent += n
            await stream.close()

        host.set_stream_handler(BARE_PROTOCOL, handler)
        async with host.run(listen_addrs=[multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]):
            print(json.dumps(str(host.get_addrs()[0])), flush=True)
            await trio.sleep_forever()

    trio.run(main)


async def bench_bare_libp2p(nbytes: int) -> tuple[float, float]:
    import multiaddr
    from libp2p import new_host
    from libp2p.crypto.ed25519 import create_new_key_pair
    from libp2p.network.stream.exceptions import StreamEOF
    from libp2p.peer.peerinfo import info_from_p2p_addr

    proc = subprocess.Popen([sys.executable, __file__, "--bare-server", str(nbytes)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        addr = json.loads(proc.stdout.readline())
        host = new_host(key_pair=create_new_key_pair(b"\x66" * 32))
        async with host.run(listen_addrs=[multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]):
            info = info_from_p2p_addr(multiaddr.Multiaddr(addr))
            with trio.fail_after(30):
                await host.connect(info)
                c0 = proc_cpu_s(proc.pid) + time.process_time()
                t0 = time.perf_counter()
                stream = await host.new_stream(info.peer_id, [BARE_PROTOCOL])
                await stream.write(b"g")
                got = 0
                while got < nbytes:
                    try:
                        chunk = await stream.read(min(CHUNK, nbytes - got))
                    except StreamEOF:
                        break
                    if not chunk:
                        break
                    got += len(chunk)
                dt = time.perf_counter() - t0
                cpu = proc_cpu_s(proc.pid) + time.process_time() - c0
            assert got == nbytes, (got, nbytes)
            await stream.close()
        return nbytes / dt / 1e6, cpu
    finally:
        proc.kill()
        proc.wait()


# -- p2p package -------------------------------------------------------------------
async def bench_gossip(tmp: Path, degree: str) -> tuple[list[float], int, float]:
    async with AsyncExitStack() as stack:
        nodes: list[ProcessNode] = []
        for i in range(N_NODES):
            nodes.append(await stack.enter_async_context(ProcessNode.spawn(
                bytes([0x10 + i]) * 32, tmp / f"g{i}", topics=[TOPIC],
                extra=["--gossip-degree", degree] + [a for n in nodes for a in ("--bootstrap", n.addrs[0])],
                stderr_path=tmp / f"g{i}.log", timeout_s=60)))
        want = min(N_NODES - 1, int(degree.split(",")[1]))
        with trio.fail_after(60):
            for n in nodes:
                while (len((await n.call("peers"))["connected"]) < N_NODES - 1
                       or len((await n.call("mesh", topic=TOPIC))["mesh"]) < want):
                    await trio.sleep(0.1)
        cpu0 = sum(proc_cpu_s(n.proc.pid) for n in nodes)
        start_at = time.time() + 1.0
        async with trio.open_nursery() as nursery:
            for i, n in enumerate(nodes):
                nursery.start_soon(lambda n=n, i=i: n.call(
                    "bench_publish", topic=TOPIC, count=N_MSGS, rate=RATE, size=MSG_SIZE,
                    offset=i, stride=N_NODES, start_at=start_at))
        expected = N_MSGS * (N_NODES - 1)
        lat: list[float] = []
        with trio.move_on_after(30):  # drain: stop early once everything arrived
            while True:
                lat = [x for n in nodes for x in (await n.call("latencies"))["latencies_ms"]]
                if len(lat) >= expected:
                    break
                await trio.sleep(0.2)
        cpu_ms_per_msg = (sum(proc_cpu_s(n.proc.pid) for n in nodes) - cpu0) / N_MSGS * 1e3
        return lat, expected - len(lat), cpu_ms_per_msg


async def bench_transfers(
    tmp: Path, nbytes: int, trials: int
) -> tuple[list[float], list[float], list[float], list[float], list[float]]:
    """Interleave content / bare libp2p / raw TCP trials so load swings hit all three alike.

    Each round runs the three once, the order rotating from round to round, so no
    kind always goes first (right after the previous round's file set-up) or last.
    """
    content: list[float] = []
    bare: list[float] = []
    tcp: list[float] = []
    content_cpu: list[float] = []
    bare_cpu: list[float] = []
    async with AsyncExitStack() as stack:
        a = await stack.enter_async_context(ProcessNode.spawn(b"\x21" * 32, tmp / "ca", stderr_path=tmp / "ca.log", timeout_s=120))
        b = await stack.enter_async_context(ProcessNode.spawn(b"\x22" * 32, tmp / "cb", stderr_path=tmp / "cb.log", timeout_s=120))
        await b.call("connect", addr=a.addrs[0])

        async def run_content(t: int) -> None:
            src = tmp / f"blob{t}"
            src.write_bytes(os.urandom(nbytes))
            cid = (await a.call("put_file", path=str(src)))["cid"]
            src.unlink()
            c0 = proc_cpu_s(a.proc.pid) + proc_cpu_s(b.proc.pid)
            reply = await b.call("fetch", cid=cid, max_bytes=nbytes, peers=[a.peer_id])
            content_cpu.append(proc_cpu_s(a.proc.pid) + proc_cpu_s(b.proc.pid) - c0)
            content.append(nbytes / reply["seconds"] / 1e6)
            Path(reply["path"]).unlink()

        async def run_bare(t: int) -> None:
            rate, cpu = await bench_bare_libp2p(nbytes)
            bare.append(rate)
            bare_cpu.append(cpu)

        async def run_tcp(t: int) -> None:
            tcp.append(bench_tcp_copy(nbytes))

        kinds = [run_content, run_bare, run_tcp]
        for t in range(trials):
            for k in range(len(kinds)):
                await kinds[(t + k) % len(kinds)](t)
    return content, bare, tcp, content_cpu, bare_cpu


async def main_async(trials: int, only: str | None) -> None:
    print(f"p2p benchmark  (python {sys.version.split()[0]}, {os.cpu_count()} cores; other load on the box adds noise; "
          f"load average now {os.getloadavg()[0]:.1f})")
    if only != "content":
        await report_gossip()
    if only != "gossip":
        await report_content(trials)


async def report_gossip() -> None:
    rtts = bench_tcp_echo()
    print(f"\n== gossip: {N_NODES} processes, each connected to the other {N_NODES - 1}; "
          f"{N_MSGS} x {MSG_SIZE} B at {RATE:.0f}/s (round-robin publishers)")
    print(f"  raw TCP echo RTT            p50 {statistics.median(rtts):8.3f} ms   p99 {pct(rtts, 0.99):8.3f} ms   (1 KB, 1000 round trips)")
    for label, degree in (("libp2p gossip (D=6)", "6,4,12"),):
        with tempfile.TemporaryDirectory() as d:
            lat, lost, cpu_ms = await bench_gossip(Path(d), degree)
        if lat:
            met = pct(lat, 0.99) <= 50 and lost == 0
            print(f"  {label:<22}      p50 {statistics.median(lat):8.2f} ms   p99 {pct(lat, 0.99):8.2f} ms   "
                  f"max {max(lat):8.2f} ms   delivered {len(lat)}/{len(lat) + lost}   lost {lost}"
                  f"   target {'MET' if met else 'NOT MET'}   CPU {cpu_ms:.1f} ms/msg (4 nodes)")
        else:
            print(f"  {label:<22}      nothing delivered, lost {lost}")


async def report_content(trials: int) -> None:
    load0 = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as d:
        content, bare, tcp, content_cpu, bare_cpu = await bench_transfers(Path(d), CONTENT_BYTES, trials)
    load1 = os.getloadavg()[0]
    med = statistics.median
    print(f"\n== content: {CONTENT_BYTES >> 20} MiB object ({CONTENT_BYTES / 1e6:.1f} MB; MB/s below = 10^6 B/s), "
          f"{trials} interleaved rounds of content / bare / raw TCP (order rotating); "
          f"1-min load {load0:.1f} at start, {load1:.1f} at end")
    rows = (("/daimon/content/1", content, "to disk, SHA-256 checked, fsync"),
            ("bare libp2p stream", bare, "memory to memory, Noise + Yamux"),
            ("raw TCP copy", tcp, "memory to memory"))
    for label, xs, note in rows:
        print(f"  {label:<19} median {med(xs):7.1f}  best {max(xs):7.1f} MB/s   "
              f"{[round(x, 1) for x in xs]}   ({note})")
    print(f"  CPU s per transfer, both ends (less load-dependent than MB/s): content median {med(content_cpu):.2f} "
          f"{[round(x, 2) for x in content_cpu]}, bare libp2p median {med(bare_cpu):.2f} "
          f"{[round(x, 2) for x in bare_cpu]}")
    med_ratio = med(content) / med(bare)
    best_ratio = max(content) / max(bare)
    paired = med([c / b for c, b in zip(content, bare)])
    print(f"  content / bare libp2p: median vs median {med_ratio:.0%}, best vs best {best_ratio:.0%}, "
          f"median of the per-round ratios {paired:.0%}; CPU, bare / content: {med(bare_cpu) / med(content_cpu):.0%}")
    # The target is judged on the medians of interleaved trials: a best-of-N picks
    # whichever single trial the other work on the machine happened to spare, and
    # the bare stream's spread between trials is wider than the gap being measured.
    print(f"  target: content >= 80% of bare libp2p, judged median vs median of these interleaved rounds: "
          f"{med_ratio:.0%} -> {'MET' if med_ratio >= 0.8 else 'NOT MET'}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trials", type=int, default=9, help="content rounds (content, bare, TCP each)")
    p.add_argument("--only", choices=["gossip", "content"], help="run one half only")
    p.add_argument("--tcp-echo-server", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--tcp-send-server", type=int, help=argparse.SUPPRESS)
    p.add_argument("--bare-server", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.tcp_echo_server:
        tcp_echo_server()
    elif args.tcp_send_server:
        tcp_send_server(args.tcp_send_server)
    elif args.bare_server:
        bare_libp2p_server(args.bare_server)
    else:
        trio.run(main_async, args.trials, args.only)


if __name__ == "__main__":
    main()
