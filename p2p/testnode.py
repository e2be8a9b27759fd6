"""A stand-alone p2p node driven by JSON lines, for cross-process tests and benchmarks.

Run ``python -m p2p.testnode --seed-hex ... --content-dir ... --topic T``. It prints
``{"event": "ready", "peer_id": ..., "addrs": [...]}`` and then answers one JSON
line per command read from stdin (see ``_COMMANDS``). It is a test harness, not the
daemon: it serves a synthetic chain (block ``i`` is ``b"block-<i>"``) and its
validator rejects payloads that start with ``--reject-prefix``.
"""

from __future__ import annotations

import argparse
import json
import logging
import struct
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import trio

from p2p.abc import GossipMessage, SyncHead, SyncProvider, ValidationResult
from p2p.node import P2PConfig, P2PNode

BENCH_MAGIC = b"BNCH"


class SyntheticChain(SyncProvider):
    """Blocks ``b"block-<i>"`` for heights ``0..height``."""

    def __init__(self, chain_id: bytes, height: int) -> None:
        self.chain_id = chain_id
        self.height = height

    def get_head(self, chain_id: bytes) -> SyncHead | None:
        if chain_id != self.chain_id or self.height < 0:
            return None
        return SyncHead(self.height, b"\x00" * 32, self.height)

    def get_blocks(self, chain_id: bytes, start_height: int, count: int) -> list[bytes]:
        if chain_id != self.chain_id:
            return []
        return [b"block-%d" % h for h in range(start_height, min(self.height + 1, start_height + count))]

    def get_headers(self, chain_id: bytes, start_height: int, count: int) -> list[bytes]:
        return [b"header-" + b[6:] for b in self.get_blocks(chain_id, start_height, count)]


class Driver:
    """Executes commands against one ``P2PNode`` and records received messages."""

    def __init__(self, node: P2PNode, reject_prefix: bytes | None) -> None:
        self.node = node
        self.reject_prefix = reject_prefix
        self.received: list[tuple[str, bytes]] = []
        self.latencies_ms: list[float] = []

    def validate(self, peer: str, data: bytes) -> ValidationResult:
        if self.reject_prefix and data.startswith(self.reject_prefix):
            return ValidationResult.REJECT
        return ValidationResult.ACCEPT

    def handle(self, msg: GossipMessage) -> None:
        if msg.data.startswith(BENCH_MAGIC):
            (sent_ns,) = struct.unpack_from(">Q", msg.data, len(BENCH_MAGIC))
            self.latencies_ms.append((time.time_ns() - sent_ns) / 1e6)
        else:
            self.received.append((msg.topic, msg.data))

    async def execute(self, cmd: dict[str, Any]) -> dict[str, Any]:
        op = cmd["cmd"]
        n = self.node
        if op == "connect":
            return {"peer_id": await n.connect(cmd["addr"])}
        if op == "publish":
            return {"msg_id": (await n.publish(cmd["topic"], bytes.fromhex(cmd["data_hex"]))).hex()}
        if op == "received":
            return {"messages": [[t, d.hex()] for t, d in self.received]}
        if op == "peers":
            return {"connected": n.connected_peers(), "stats": [_stats(s) for s in n.peers()]}
        if op == "mesh":
            return {"mesh": n.mesh_peers(cmd["topic"])}
        if op == "put_file":
            return {"cid": n.store.put_file(cmd["path"]).hex()}
        if op == "fetch":
            t0 = time.perf_counter()
            path = await n.fetch_content(bytes.fromhex(cmd["cid"]), cmd["max_bytes"], cmd.get("peers"))
            return {"path": str(path), "seconds": time.perf_counter() - t0}
        if op == "sync":
            blocks = await n.request_blocks(cmd.get("peer"), bytes.fromhex(cmd["chain_id"]), cmd["start"], cmd["count"])
            return {"blocks": [b.hex() for b in blocks]}
        if op == "bench_publish":
            await self._bench_publish(cmd)
            return {}
        if op == "latencies":
            return {"latencies_ms": self.latencies_ms}
        raise ValueError(f"unknown command {op!r}")

    async def _bench_publish(self, cmd: dict[str, Any]) -> None:
        """Publish messages ``offset, offset+stride, ...`` < count on a shared schedule."""
        start_at: float = cmd["start_at"]  # wall-clock second shared by all publishers
        rate: float = cmd["rate"]
        size: int = cmd["size"]
        for i in range(cmd["offset"], cmd["count"], cmd["stride"]):
            due = start_at + i / rate
            delay = due - time.time()
            if delay > 0:
                await trio.sleep(delay)
            head = BENCH_MAGIC + struct.pack(">QI", time.time_ns(), i)
            await self.node.publish(cmd["topic"], head + b"\x00" * (size - len(head)))


def _stats(s: Any) -> dict[str, Any]:
    return {k: getattr(s, k) for k in s.__slots__}


async def _serve_stdin(driver: Driver, out: Any) -> None:
    stdin = trio.lowlevel.FdStream(sys.stdin.fileno())
    buf = b""
    async with trio.open_nursery() as nursery:
        while True:
            data = await stdin.receive_some(65536)
            if not data:
                nursery.cancel_scope.cancel()
                return
            buf += data
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                if line.strip():
                    nursery.start_soon(_run_command, driver, json.loads(line), out)


async def _run_command(driver: Driver, cmd: dict[str, Any], out: Any) -> None:
    try:
        reply = {"event": "reply", "id": cmd.get("id"), "ok": True, **await driver.execute(cmd)}
    except Exception as exc:  # reported to the controller, which decides
        reply = {"event": "reply", "id": cmd.get("id"), "ok": False, "error": f"{type(exc).__name__}: {exc}"}
    out.write(json.dumps(reply) + "\n")
    out.flush()


async def main_async(args: argparse.Namespace) -> None:
    chain_id = bytes.fromhex(args.chain_id_hex)
    config = P2PConfig(
        seed=bytes.fromhex(args.seed_hex),
        content_dir=Path(args.content_dir),
        listen_addr=args.listen,
        bootstrap=args.bootstrap,
        ban_threshold=args.ban_threshold,
        gossip_degree=tuple(int(x) for x in args.gossip_degree.split(",")),  # type: ignore[arg-type]
    )
    node = P2PNode(config, sync_provider=SyntheticChain(chain_id, args.chain_height))
    driver = Driver(node, args.reject_prefix.encode() if args.reject_prefix else None)
    async with trio.open_nursery() as nursery:
        await nursery.start(node.run)
        for topic in args.topic:
            await node.subscribe(topic, driver.handle, driver.validate)
        sys.stdout.write(json.dumps({"event": "ready", "peer_id": node.peer_id, "addrs": node.listen_addrs()}) + "\n")
        sys.stdout.flush()
        await _serve_stdin(driver, sys.stdout)
        nursery.cancel_scope.cancel()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--seed-hex", required=True)
    p.add_argument("--content-dir", required=True)
    p.add_argument("--listen", default="/ip4/127.0.0.1/tcp/0")
    p.add_argument("--bootstrap", action="append", default=[])
    p.add_argument("--topic", action="append", default=[])
    p.add_argument("--reject-prefix", default="")
    p.add_argument("--chain-id-hex", default="00" * 32)
    p.add_argument("--chain-height", type=int, default=-1)
    p.add_argument("--ban-threshold", type=float, default=5.0)
    p.add_argument("--gossip-degree", default="6,4,12", help="D,D_low,D_high")
    p.add_argument("--log-level", default="WARNING")
    args = p.parse_args(argv)
    logging.basicConfig(level=args.log_level, stream=sys.stderr)
    trio.run(main_async, args)


if __name__ == "__main__":
    main()


class ProcessNode:
    """Controller of one ``python -m p2p.testnode`` child process (tests, benchmarks).

    Use ``async with ProcessNode.spawn(...) as node``: the child is killed on exit
    whatever happened. Commands are sent one at a time and each waits for its reply
    under ``timeout_s``.
    """

    def __init__(self, proc: trio.Process, timeout_s: float) -> None:
        self.proc = proc
        self.timeout_s = timeout_s
        self._buf = b""
        self._next_id = 0
        self._lock = trio.Lock()
        self.peer_id = ""
        self.addrs: list[str] = []

    @classmethod
    def spawn(
        cls, seed: bytes, content_dir: Path, *, topics: Sequence[str] = (), extra: Sequence[str] = (),
        stderr_path: Path | None = None, timeout_s: float = 30.0,
    ) -> AbstractAsyncContextManager["ProcessNode"]:
        @asynccontextmanager
        async def _run() -> AsyncIterator[ProcessNode]:
            argv = [sys.executable, "-m", "p2p.testnode", "--seed-hex", seed.hex(), "--content-dir", str(content_dir)]
            for t in topics:
                argv += ["--topic", t]
            argv += list(extra)
            err = open(stderr_path, "wb") if stderr_path else subprocess.DEVNULL
            proc = await trio.lowlevel.open_process(
                argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err,
                cwd=str(Path(__file__).resolve().parent.parent),
            )
            node = cls(proc, timeout_s)
            try:
                ready = await node._read_json()
                node.peer_id, node.addrs = ready["peer_id"], ready["addrs"]
                yield node
            finally:
                proc.kill()
                with trio.move_on_after(5):
                    await proc.wait()
                if stderr_path:
                    err.close()  # type: ignore[union-attr]

        return _run()

    async def _read_json(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        with trio.fail_after(self.timeout_s):
            while b"\n" not in self._buf:
                chunk = await self.proc.stdout.receive_some(65536)
                if not chunk:
                    raise RuntimeError(f"test node exited (rc={self.proc.poll()})")
                self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return json.loads(line)

    async def call(self, cmd: str, **kwargs: Any) -> dict[str, Any]:
        """Send one command and return its reply; raises ``RuntimeError`` on a failed command."""
        async with self._lock:
            self._next_id += 1
            assert self.proc.stdin is not None
            await self.proc.stdin.send_all((json.dumps({"cmd": cmd, "id": self._next_id, **kwargs}) + "\n").encode())
            while True:
                reply = await self._read_json()
                if reply.get("id") == self._next_id:
                    break
        if not reply["ok"]:
            raise RuntimeError(reply["error"])
        return reply
