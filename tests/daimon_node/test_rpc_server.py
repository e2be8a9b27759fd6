"""The RPC server over real sockets on 127.0.0.1: HTTP, WebSocket subscriptions, /health, /metrics, the client.

The backend is the node's own (``NodeBackend``) over a devnet chain in LevelDB (``rpcnode``);
events reach subscribers the way ``start_rpc`` wires them, from the node's ``emit``.
"""

from __future__ import annotations

import http.client
import json
import random
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families
from trio_websocket import ConnectionClosed, open_websocket_url

from chain.consensus import period_end
from chain.devnet import corrupt
from chain.crypto import sha256
from chain.payloads import Transfer
from chain.state import get_meta
from daimon_node.daemon.backend import NodeBackend
from daimon_node.rpc.api import NodeInfo
from daimon_node.rpc.client import RpcClient, RpcConnectionError, subscribe
from daimon_node.rpc import errors as E
from daimon_node.rpc.server import RpcServer, ServerConfig
from daimon_node.harness.devnet_node import devnet_node
from rpcnode import MODEL, MODEL_DIGEST, RPC_REVEALS, rpc_devnet

DEVNET = rpc_devnet()  # see rpc_devnet for what each height holds
CHAIN = DEVNET.chain_id
HEAD = len(DEVNET.blocks) - 1
TIMEOUT = 10


class FlakyBackend(NodeBackend):
    """The node's backend with a bug planted in ``peer_count``, and an unhealthy state a test can
    set (a node reports itself unhealthy through ``node_info``; /health must pass it on)."""

    unhealthy_reason = ""
    node: Any = None  # set by the fixture: the node behind the backend

    async def peer_count(self) -> int:
        raise KeyError("boom")

    async def node_info(self) -> NodeInfo:
        info = await super().node_info()
        if self.unhealthy_reason:
            info.update(healthy=False, reason=self.unhealthy_reason)
        return info


@dataclass
class Served:
    server: RpcServer
    backend: FlakyBackend
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def client_call(self, fn: Callable[[RpcClient], Any]) -> Any:
        """Run the synchronous client in a worker thread, as the CLI would run it in its own process."""
        def work() -> Any:
            with RpcClient(self.url, timeout=TIMEOUT) as client:
                return fn(client)
        return await trio.to_thread.run_sync(work)


@pytest.fixture
def backend(tmp_path: Path) -> Iterator[FlakyBackend]:
    node = devnet_node(tmp_path / "node", DEVNET)
    node_backend = FlakyBackend(node.services)
    node_backend.node = node  # the test drives the node behind the backend (its clock, its own blocks)
    yield node_backend
    node.chains.close()


async def start(nursery: trio.Nursery, backend: FlakyBackend, **config: Any) -> Served:
    server = RpcServer(backend, config=ServerConfig(**{"max_request_bytes": 256 * 1024, **config}))
    backend.api.listen(lambda event, chain, payload: server.events.publish(event, chain, payload))
    port = await nursery.start(server.serve, "127.0.0.1", 0)
    return Served(server, backend, port)


def raw_http(port: int, data: bytes) -> bytes:
    """Send raw bytes, return everything the server sends until it closes (blocking; run in a thread)."""
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as s:
        s.sendall(data)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)


def post(port: int, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT)
    try:
        conn.request("POST", "/", body, headers or {"Content-Type": "application/json"})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def get(port: int, path: str) -> tuple[int, str, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.getheader("content-type") or "", resp.read()
    finally:
        conn.close()


# --- every method through the client -----------------------------------------------------
async def test_every_method_round_trip(nursery: trio.Nursery, backend: FlakyBackend) -> None:
    s = await start(nursery, backend)
    validator, sender, runner = DEVNET.validator_keys[0], DEVNET.improver_keys[2], DEVNET.validator_keys[1]
    # improver 2 proves the model it claimed at height 5; validator 0 votes; improver 1's reveal is due
    poi, proof_reveal = DEVNET.prove(sender, MODEL_DIGEST, corrupt(DEVNET.truth, 0.04, 10, seed=3))
    vote = DEVNET.vote(validator, poi, proof_reveal)
    reveal = RPC_REVEALS[CHAIN]
    tx = DEVNET.tx(sender, Transfer(validator.address_bytes, 10**18))

    def calls(c: RpcClient) -> dict[str, Any]:
        return {
            "problems": c.list_problems(),
            "problem": c.get_problem(CHAIN),
            "height": c.block_number(CHAIN),
            "block": c.get_block_by_number(CHAIN, 3),
            "missing": c.get_block_by_number(CHAIN, 1000),
            "by_hash": c.get_block_by_hash(CHAIN, DEVNET.blocks[3].hash),
            "balance": c.get_balance(CHAIN, validator.address_bytes),
            "nonce_before": c.get_nonce("0x" + CHAIN.hex(), sender.address_bytes),
            "best": c.best_model(CHAIN),
            "confirmed": c.confirmed_model(CHAIN),
            "locks": c.get_locks(CHAIN, validator.address_bytes),
            "bond": c.get_bond(CHAIN, validator.public_key),
            "no_bond": c.get_bond(CHAIN, sender.public_key),
            "channel": c.get_channel(CHAIN, sender.address_bytes, runner.address_bytes),
            "committers": c.call("daimon_getCommitters", "0x" + CHAIN.hex()),
            "period": c.period(CHAIN),
            "tx": c.send_raw_transaction(CHAIN, tx.encode()),
            "nonce_after": c.get_nonce(CHAIN, sender.address_bytes),
            "proof": c.submit_proof(CHAIN, poi.encode()),
            "vote": c.submit_vote(CHAIN, vote.encode()),
            "reveal": c.submit_reveal(CHAIN, reveal.encode().hex()),  # bare hex is accepted by the client
            "syncing": c.syncing(),
            "info": c.node_info(),
            "peers": c.peers(),
            "offers": c.get_offers(CHAIN),
            "reputation": c.get_reputation(CHAIN, runner.address_bytes),
            "model": c.submit_model(CHAIN, MODEL, sender.public_key),
            "content": c.get_content(MODEL_DIGEST),
            "dashboard": c.call("daimon_dashboard", "0x" + CHAIN.hex()),
        }

    with trio.fail_after(TIMEOUT):
        r = await s.client_call(calls)
    assert r["problems"] == [{"chain": "0x" + CHAIN.hex(), "name": "devnet", "height": HEAD,
                              "head": "0x" + DEVNET.blocks[-1].hash.hex(), "followed": True, "holders": []}]
    assert r["problem"]["params"]["name"] == "devnet" and r["problem"]["chain_id"] == CHAIN.hex()
    assert r["problem"]["height"] == HEAD and r["problem"]["minted"] == str(get_meta(DEVNET.state).minted)
    assert r["height"] == HEAD
    anchored = DEVNET.blocks[3]
    assert r["block"]["hash"] == "0x" + anchored.hash.hex() and r["block"] == r["by_hash"]
    assert r["block"]["anchor"]["prover"] == "0x" + DEVNET.improver_keys[0].public_key.hex()  # flat (docs/rpc.md)
    assert r["missing"] is None
    assert r["balance"] == {"spendable": DEVNET.balance(validator)[0], "locked": DEVNET.balance(validator)[1]}
    assert r["balance"]["locked"] == DEVNET.cfg.validator_bond
    assert (r["nonce_before"], r["nonce_after"]) == (1, 2)  # the claim at height 5, then the pooled transfer
    settled = DEVNET.receipts[4].settlement
    assert settled is not None and r["best"] == r["confirmed"]  # no holdout: a settled model is confirmed
    assert r["best"]["prover"] == "0x" + settled.improver.hex() and r["best"]["height"] == 4
    assert [p["kind"] for p in r["locks"]["parts"]] == ["validator_bond"]
    assert r["bond"]["amount"] == str(DEVNET.cfg.validator_bond) and r["no_bond"] is None
    assert r["channel"] is None
    assert r["committers"]["fixed"] is True and len(r["committers"]["in_force"]) == DEVNET.cfg.committers
    assert r["period"]["period"] == DEVNET.period + 1  # the clock is in the period the chain takes next
    assert r["tx"] == "0x" + tx.hash.hex() and r["proof"] == "0x" + poi.hash.hex()
    assert r["vote"] == "0x" + sha256(vote.encode()).hex()  # the vote's own id, as documented
    assert r["reveal"] == "0x" + reveal.poi_hash.hex()  # the PoI the reveal opens
    assert r["syncing"] is False and r["peers"] == []
    assert r["info"]["peers"] == 0 and r["info"]["healthy"] is True and r["info"]["chains"][0]["height"] == HEAD
    assert r["offers"] == [{"provider": "0x" + runner.address_bytes.hex(), "price": "5",
                            "peer_id": "12D3KooWRunner", "model_digest": "0x" + MODEL_DIGEST.hex()}]
    assert r["reputation"] == {"address": "0x" + runner.address_bytes.hex(), "score": 1, "ratings": 1}
    assert r["model"] == "0x" + MODEL_DIGEST.hex() and r["content"] == MODEL
    assert r["dashboard"]["height"] == HEAD and len(r["dashboard"]["history"]) == 2
    assert r["dashboard"]["blocks"][HEAD - 4]["settlement"]["outcome"] == "settled"

    def missing_content(c: RpcClient) -> Any:
        return c.get_content(b"\x07" * 32)
    with trio.fail_after(TIMEOUT), pytest.raises(E.NotFound):
        await s.client_call(missing_content)

    def peers(c: RpcClient) -> Any:
        return c.peer_count()
    with trio.fail_after(TIMEOUT), pytest.raises(E.InternalError):
        await s.client_call(peers)


async def test_client_typed_errors_and_batch(nursery: trio.Nursery, backend: FlakyBackend) -> None:
    s = await start(nursery, backend, max_batch=5)

    def work(c: RpcClient) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, fn in [("not_found", lambda: c.block_number(b"\x01" * 32)),
                         ("rejected", lambda: c.send_raw_transaction(CHAIN, b"\x00\x01")),
                         ("params", lambda: c.get_block_by_number(CHAIN, -5)),
                         ("method", lambda: c.call("daimon_bogus"))]:
            try:
                fn()
            except E.RpcError as err:
                out[name] = err
        out["batch"] = c.batch([("daimon_blockNumber", ["0x" + CHAIN.hex()]), ("daimon_peerCount", []),
                                ("daimon_nodeInfo", [])])
        try:
            c.batch([("daimon_nodeInfo", [])] * 6)
        except E.RpcError as err:
            out["too_big"] = err
        c.notify("daimon_blockNumber", "0x" + CHAIN.hex())  # 204, nothing to return
        out["after"] = c.block_number(CHAIN)  # same kept-alive connection still works
        return out

    with trio.fail_after(TIMEOUT):
        out = await s.client_call(work)
    assert isinstance(out["not_found"], E.NotFound) and out["not_found"].code == E.NOT_FOUND
    assert isinstance(out["rejected"], E.Rejected) and "malformed transaction" in out["rejected"].reason
    assert isinstance(out["params"], E.InvalidParams)
    assert isinstance(out["method"], E.MethodNotFound)
    assert out["batch"][0] == HEAD and isinstance(out["batch"][1], E.InternalError)
    assert out["batch"][2]["peers"] == 0  # the node's network is not started
    assert isinstance(out["too_big"], E.InvalidRequest)
    assert out["after"] == HEAD


async def test_client_unreachable_node() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound but not listening: connection refused
        with trio.fail_after(TIMEOUT), pytest.raises(RpcConnectionError, match="cannot reach node"):
            await trio.to_thread.run_sync(lambda: RpcClient(f"http://127.0.0.1:{port}", timeout=2).peer_count())


# --- HTTP edge cases ------------------------------------------------------------------------
async def test_oversized_request_gets_413(nursery: trio.Nursery, backend: FlakyBackend) -> None:
    s = await start(nursery, backend, max_request_bytes=1024)
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "daimon_submitProof",
                       "params": ["0x" + CHAIN.hex(), "0x" + "00" * 2000]}).encode()
    with trio.fail_after(TIMEOUT):
        status, _ = await trio.to_thread.run_sync(post, s.port, body)
        assert status == 413
        chunked = (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                   + b"".join(b"200\r\n" + b"a" * 512 + b"\r\n" for _ in range(4)) + b"0\r\n\r\n")
        reply = await trio.to_thread.run_sync(raw_http, s.port, chunked)
        assert reply.startswith(b"HTTP/1.1 413 ")
        status, body = await trio.to_thread.run_sync(
            post, s.port, json.dumps({"jsonrpc": "2.0", "id": 1, "method": "daimon_peerCount"}).encode())
        assert status == 200  # and still serving


@pytest.mark.parametrize("data,status", [
    (b"GARBAGE\r\n\r\n", b"400"),
    (b"POST / HTTP/1.1\r\nContent-Length: nope\r\n\r\n", b"400"),
    (b"POST / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n", b"400"),
    (b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 40_000 + b"\r\n\r\n", b"431"),
])
async def test_malformed_http_gets_4xx_and_close(nursery: trio.Nursery, backend: FlakyBackend, data: bytes, status: bytes) -> None:
    s = await start(nursery, backend, max_header_bytes=16 * 1024)
    with trio.fail_after(TIMEOUT):
        reply = await trio.to_thread.run_sync(raw_http, s.port, data)  # returns only once the server closes
    assert reply.split(b" ")[1] == status
    with trio.fail_after(TIMEOUT):
        assert (await trio.to_thread.run_sync(get, s.port, "/health"))[0] == 200


async def test_keep_alive_pipelining_and_routes(nursery: trio.Nursery, backend: FlakyBackend) -> None:
    s = await start(nursery, backend)
    one = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "daimon_blockNumber",
                      "params": ["0x" + CHAIN.hex()]}).encode()
    request = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(one), one)
    last = b"GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    with trio.fail_after(TIMEOUT):
        reply = await trio.to_thread.run_sync(raw_http, s.port, request * 3 + last)
    assert reply.count(b'{"jsonrpc":"2.0","id":1,"result":%d}' % HEAD) == 3
    assert reply.count(b"HTTP/1.1 200 OK") == 3 and b"HTTP/1.1 404 Not Found" in reply
    with trio.fail_after(TIMEOUT):
        assert (await trio.to_thread.run_sync(get, s.port, "/"))[0] == 200  # the web page (issue 8)
        assert (await trio.to_thread.run_sync(get, s.port, "/web/../rpc/server.py"))[0] == 404
        assert (await trio.to_thread.run_sync(get, s.port, "/ws"))[0] == 426


async def test_idle_connection_is_closed(nursery: trio.Nursery, backend: FlakyBackend) -> None:
    s = await start(nursery, backend, idle_timeout=0.3, read_timeout=0.3)
    with trio.fail_after(TIMEOUT):
        stream = await trio.open_tcp_stream("127.0.0.1", s.port)
        assert await stream.receive_some(100) == b""  # closed by the server, nothing sent
        stream = await trio.open_tcp_stream("127.0.0.1", s.port)
        await stream.send_all(b"POST / HTTP/1.1\r\nHost: x\r\n")  # slowloris: head never finished
        assert await stream.receive_some(100) == b""


async def test_max_connections_gives_503(nursery: trio.Nursery, backend: FlakyBackend) -> None:
    s = await start(nursery, backend, max_connections=1)
    with trio.fail_after(TIMEOUT):
        hog = await trio.open_tcp_stream("127.0.0.1", s.port)
        while s.server.connections < 1:
            await trio.sleep(0.01)
        status, _, _ = await trio.to_thread.run_sync(get, s.port, "/health")
        assert status == 503
        await hog.aclose()
        while s.server.connections > 0:
            await trio.sleep(0.01)
        assert (await trio.to_thread.run_sync(get, s.port, "/health"))[0] == 200


# --- /health and /metrics -------------------------------------------------------------------
async def test_health(nursery: trio.Nursery, backend: FlakyBackend) -> None:
    s = await start(nursery, backend)
    with trio.fail_after(TIMEOUT):
        status, ctype, body = await trio.to_thread.run_sync(get, s.port, "/health")
        assert (status, ctype) == (200, "application/json")
        assert json.loads(body) == {"status": "ok", "height": HEAD, "peers": 0,
                                    "chains": [{"chain": "0x" + CHAIN.hex(), "height": HEAD}]}
        s.backend.unhealthy_reason = "no peers for 60 s"
        status, _, body = await trio.to_thread.run_sync(get, s.port, "/health")
        assert status == 503 and json.loads(body)["reason"] == "no peers for 60 s"


async def test_metrics_text_format(nursery: trio.Nursery, backend: FlakyBackend) -> None:
    s = await start(nursery, backend)
    height = s.server.metrics.gauge("daimon_height", "Head height per chain", ["chain"])
    height.labels(CHAIN.hex()[:16]).set(HEAD)
    s.server.metrics.counter("daimon_gossip_rejected", "Gossip messages rejected", ["topic"]).labels("blocks").inc(2)
    s.server.metrics.gauge("daimon_peers", "Connected peers", function=lambda: 3.0)
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "daimon_blockNumber", "params": ["0x00"]}).encode()
    with trio.fail_after(TIMEOUT):
        await trio.to_thread.run_sync(post, s.port, body)
        await trio.to_thread.run_sync(post, s.port, b"{{{")
        status, ctype, text = await trio.to_thread.run_sync(get, s.port, "/metrics")
    assert status == 200 and ctype.startswith("text/plain")
    samples = {(smp.name, tuple(sorted(smp.labels.items()))): smp.value
               for fam in text_string_to_metric_families(text.decode()) for smp in fam.samples}
    assert samples[("daimon_height", (("chain", CHAIN.hex()[:16]),))] == HEAD
    assert samples[("daimon_gossip_rejected_total", (("topic", "blocks"),))] == 2
    assert samples[("daimon_peers", ())] == 3
    assert samples[("daimon_rpc_errors_total", (("code", "-32602"),))] == 1
    assert samples[("daimon_rpc_errors_total", (("code", "-32700"),))] == 1
    assert samples[("daimon_rpc_http_responses_total", (("status", "200"),))] == 2
    assert samples[("daimon_rpc_request_duration_seconds_count", (("method", "daimon_blockNumber"),))] == 1
    assert samples[("daimon_rpc_connections", ())] >= 1


# --- WebSocket ------------------------------------------------------------------------------
async def ws_call(ws: Any, method: str, params: Any, id_: int = 1) -> Any:
    await ws.send_message(json.dumps({"jsonrpc": "2.0", "id": id_, "method": method, "params": params}))
    return json.loads(await ws.get_message())


async def test_ws_subscribe_new_heads_then_unsubscribe(nursery: trio.Nursery, backend: FlakyBackend) -> None:
    s = await start(nursery, backend)
    extra = rpc_devnet()  # the same deterministic chain, one block further
    new_block = extra.commit()
    node = backend.node
    node.clock.set(period_end(extra.params, extra.period))  # the block's timestamp is not ahead of the node
    with trio.fail_after(TIMEOUT):
        async with open_websocket_url(f"ws://127.0.0.1:{s.port}/ws") as ws:
            assert (await ws_call(ws, "daimon_blockNumber", ["0x" + CHAIN.hex()]))["result"] == HEAD
            sub = (await ws_call(ws, "daimon_subscribe", ["newHeads", "0x" + CHAIN.hex()]))["result"]
            assert sub.startswith("0x")
            await node.context.publish_block(node.chains.chains[CHAIN], new_block.encode())  # as its committer would
            note = json.loads(await ws.get_message())
            assert note["method"] == "daimon_subscription"
            assert note["params"]["subscription"] == sub
            head = note["params"]["result"]
            block = (await ws_call(ws, "daimon_getBlockByNumber", ["0x" + CHAIN.hex(), HEAD + 1], 2))["result"]
            assert head["hash"] == "0x" + new_block.hash.hex() and head["height"] == HEAD + 1
            assert {k: v for k, v in head.items() if k != "weight"} == {k: block[k] for k in head if k != "weight"}
            assert head["weight"] == node.chains.chains[CHAIN].store.tip().weight
            assert (await ws_call(ws, "daimon_unsubscribe", [sub], 3))["result"] is True
            assert (await ws_call(ws, "daimon_unsubscribe", [sub], 4))["result"] is False
            assert s.server.events.publish("newHeads", CHAIN, {"height": HEAD + 2}) == 0  # nobody listening
            assert (await ws_call(ws, "daimon_blockNumber", ["0x" + CHAIN.hex()], 5))["result"] == HEAD + 1


async def test_ws_proofs_and_votes_from_submissions(nursery: trio.Nursery, backend: FlakyBackend) -> None:
    s = await start(nursery, backend)
    prover = DEVNET.improver_keys[2]
    poi, reveal = DEVNET.prove(prover, MODEL_DIGEST, corrupt(DEVNET.truth, 0.04, 10, seed=4))
    vote = DEVNET.vote(DEVNET.validator_keys[1], poi, reveal)
    with trio.fail_after(TIMEOUT):
        async with open_websocket_url(f"ws://127.0.0.1:{s.port}/ws") as ws:
            proofs = (await ws_call(ws, "daimon_subscribe", ["proofs", "0x" + CHAIN.hex()]))["result"]
            votes = (await ws_call(ws, "daimon_subscribe", {"topic": "votes", "chain": "0x" + CHAIN.hex()}, 2))["result"]
            await s.client_call(lambda c: (c.submit_proof(CHAIN, poi.encode()), c.submit_vote(CHAIN, vote.encode())))
            first, second = json.loads(await ws.get_message()), json.loads(await ws.get_message())
    assert first["params"]["subscription"] == proofs
    assert first["params"]["result"] == {"poi": "0x" + poi.hash.hex(), "prover": "0x" + prover.public_key.hex(),
                                         "model_digest": "0x" + MODEL_DIGEST.hex(), "period": poi.period}
    assert second["params"]["subscription"] == votes
    assert second["params"]["result"] == {"poi": "0x" + poi.hash.hex(),
                                          "validator": "0x" + DEVNET.validator_keys[1].public_key.hex()}


async def test_ws_subscribe_errors(nursery: trio.Nursery, backend: FlakyBackend) -> None:
    s = await start(nursery, backend)
    with trio.fail_after(TIMEOUT):
        async with open_websocket_url(f"ws://127.0.0.1:{s.port}/ws") as ws:
            assert (await ws_call(ws, "daimon_subscribe", ["logs", "0x" + CHAIN.hex()]))["error"]["code"] == E.INVALID_PARAMS
            assert (await ws_call(ws, "daimon_subscribe", ["newHeads", "0x" + "ee" * 32]))["error"]["code"] == E.NOT_FOUND
            assert (await ws_call(ws, "daimon_subscribe", ["newHeads"]))["error"]["code"] == E.INVALID_PARAMS
            await ws.send_message("not json")
            assert json.loads(await ws.get_message())["error"]["code"] == E.PARSE_ERROR
            await ws.send_message(b'{"jsonrpc":"2.0","id":9,"method":"daimon_peerCount"}')  # binary frame
            assert json.loads(await ws.get_message())["error"]["code"] == E.INTERNAL_ERROR  # flaky backend


async def test_ws_message_over_cap_closes_1009(nursery: trio.Nursery, backend: FlakyBackend) -> None:
    s = await start(nursery, backend, max_request_bytes=1024)
    with trio.fail_after(TIMEOUT):
        async with open_websocket_url(f"ws://127.0.0.1:{s.port}/ws") as ws:
            await ws.send_message("x" * 5000)
            with pytest.raises(ConnectionClosed) as info:
                await ws.get_message()
    assert info.value.reason.code == 1009


async def test_slow_subscriber_is_dropped_without_blocking_publish(nursery: trio.Nursery, backend: FlakyBackend) -> None:
    s = await start(nursery, backend, ws_queue_size=8)
    hub = s.server.events
    payload = {"blob": "x" * 65536}
    with trio.fail_after(TIMEOUT):
        async with open_websocket_url(f"ws://127.0.0.1:{s.port}/ws") as fast, \
                open_websocket_url(f"ws://127.0.0.1:{s.port}/ws", message_queue_size=1) as slow:
            await ws_call(fast, "daimon_subscribe", ["newHeads", "0x" + CHAIN.hex()])
            await ws_call(slow, "daimon_subscribe", ["newHeads", "0x" + CHAIN.hex()])
            assert hub.subscriber_count == 2
            # ``slow`` never reads again: its client stops draining the socket, the kernel buffers
            # fill, its writer task blocks, then its queue fills and the hub drops it.
            worst, published = 0.0, 0
            while hub.subscriber_count == 2:
                started = time.perf_counter()
                hub.publish("newHeads", CHAIN, payload)
                worst = max(worst, time.perf_counter() - started)
                published += 1
                got = json.loads(await fast.get_message())  # the fast one keeps up
                assert got["params"]["result"] == payload
            assert hub.subscriber_count == 1 and published > 8
            assert worst < 0.05  # publish never waited on a socket
            hub.publish("newHeads", CHAIN, {"after": True})
            assert json.loads(await fast.get_message())["params"]["result"] == {"after": True}
            assert (await ws_call(fast, "daimon_blockNumber", ["0x" + CHAIN.hex()], 2))["result"] == HEAD
    text = s.server.metrics.render().decode()
    assert "daimon_ws_subscribers_dropped_total 1.0" in text


async def test_client_subscribe_helper(nursery: trio.Nursery, backend: FlakyBackend) -> None:
    s = await start(nursery, backend)

    def follow() -> list[Any]:
        out = []
        for result in subscribe(f"ws://127.0.0.1:{s.port}/ws", "newHeads", CHAIN, timeout=TIMEOUT):
            out.append(result)
            if len(out) == 2:
                return out
        return out

    async def publish_when_subscribed() -> None:
        hub = s.server.events
        while not any(sub.subscriptions for sub in hub._subscribers):
            await trio.sleep(0.01)
        hub.publish("newHeads", CHAIN, {"height": HEAD + 1})
        hub.publish("newHeads", CHAIN, {"height": HEAD + 2})

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as inner:
            inner.start_soon(publish_when_subscribed)
            got = await trio.to_thread.run_sync(follow)
    assert got == [{"height": HEAD + 1}, {"height": HEAD + 2}]


async def test_garbage_from_clients_never_stops_the_server(nursery: trio.Nursery, backend: FlakyBackend) -> None:
    s = await start(nursery, backend, read_timeout=0.5, ws_idle_timeout=0.6)
    rng = random.Random(7)
    heads = [b"", b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n",
             b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
             b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"]

    async def one(i: int) -> None:
        stream = await trio.open_tcp_stream("127.0.0.1", s.port)
        junk = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 3000)))
        try:
            await stream.send_all(heads[i % len(heads)] + junk)
            while await stream.receive_some(65536):  # until the server closes (or times out the read)
                pass
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            await stream.aclose()

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as clients:
            for i in range(60):
                clients.start_soon(one, i)
        status, _, _ = await trio.to_thread.run_sync(get, s.port, "/health")
    assert status == 200
    assert s.server.connections <= 1
