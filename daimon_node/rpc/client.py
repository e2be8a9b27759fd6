"""A small synchronous JSON-RPC client for the node; the CLI talks to the node through it.

Standard library only (``http.client`` keep-alive connection), so ``daimon-node status``
starts fast and needs nothing beyond the node's own dependencies. Errors come back as
the typed classes of ``daimon_node.rpc.errors`` (``NotFound``, ``Rejected``...), all
``RpcError(code, message)``; an unreachable node is ``RpcConnectionError``.
``subscribe`` is a blocking WebSocket iterator built on wsproto (already installed
with the node) for scripts that follow new heads.
"""

from __future__ import annotations

import hashlib
import http.client
import itertools
import json
import socket
from typing import Any, Iterator, Sequence
from urllib.parse import urlsplit

from daimon_node.errors import DaimonError
from daimon_node.rpc.errors import RpcError, error_from_json

HexLike = str | bytes


class RpcConnectionError(DaimonError):
    """The node could not be reached or answered with something that is not JSON-RPC."""


def to_hex(value: HexLike) -> str:
    """Bytes, ``0x``-hex or bare hex as the ``0x``-hex the RPC expects."""
    if isinstance(value, (bytes, bytearray)):
        return "0x" + bytes(value).hex()
    return value if value.startswith("0x") else "0x" + value


class RpcClient:
    """``RpcClient("http://127.0.0.1:8545")``; one method per RPC method, plus ``call`` and ``batch``."""

    def __init__(self, url: str, *, timeout: float = 10.0) -> None:
        parts = urlsplit(url if "://" in url else "http://" + url)
        if parts.scheme != "http" or not parts.hostname:
            raise RpcConnectionError(f"unsupported RPC url {url!r}: expected http://host:port")
        self.url = url
        self.host, self.port = parts.hostname, parts.port or 80
        self.path = parts.path or "/"
        self.timeout = timeout
        self._conn: http.client.HTTPConnection | None = None
        self._ids = itertools.count(1)

    # --- transport -------------------------------------------------------------------------
    def _post(self, payload: Any) -> Any:
        body = json.dumps(payload, separators=(",", ":")).encode()
        for attempt in (0, 1):  # one retry: a kept-alive connection may have been closed by the server
            if self._conn is None:
                self._conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            try:
                self._conn.request("POST", self.path, body, {"Content-Type": "application/json"})
                resp = self._conn.getresponse()
                data = resp.read()
            except (ConnectionError, http.client.HTTPException, socket.timeout, OSError) as exc:
                self.close()
                if attempt == 0 and isinstance(exc, (ConnectionResetError, BrokenPipeError,
                                                     http.client.RemoteDisconnected)):
                    continue
                raise RpcConnectionError(f"cannot reach node at {self.url}: {exc}") from None
            if resp.will_close:
                self.close()
            if resp.status == 204:
                return None
            try:
                return json.loads(data)
            except ValueError:
                raise RpcConnectionError(f"node at {self.url} answered HTTP {resp.status}: {data[:200]!r}") from None
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> "RpcClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- generic calls ---------------------------------------------------------------------
    def call(self, method: str, *params: Any) -> Any:
        """Call ``method`` with positional params; returns the result or raises a typed ``RpcError``."""
        reply = self._post({"jsonrpc": "2.0", "id": next(self._ids), "method": method, "params": list(params)})
        return _result(reply)

    def notify(self, method: str, *params: Any) -> None:
        """Send a notification (no id): the node executes it and answers nothing."""
        self._post({"jsonrpc": "2.0", "method": method, "params": list(params)})

    def batch(self, calls: Sequence[tuple[str, Sequence[Any]]]) -> list[Any]:
        """Send ``[(method, params), ...]`` as one batch; results in order, an ``RpcError`` in place of each failure."""
        if not calls:
            return []
        ids = [next(self._ids) for _ in calls]
        reply = self._post([{"jsonrpc": "2.0", "id": i, "method": m, "params": list(p)}
                            for i, (m, p) in zip(ids, calls)])
        if isinstance(reply, dict):  # the whole batch was refused (too large)
            raise error_from_json(reply.get("error"))
        if not isinstance(reply, list):
            raise RpcConnectionError(f"unexpected batch reply: {reply!r:.200}")
        by_id = {r.get("id"): r for r in reply if isinstance(r, dict)}
        out: list[Any] = []
        for i in ids:
            r = by_id.get(i)
            if r is None:
                out.append(RpcError(f"no response for request {i}"))
            elif "error" in r:
                out.append(error_from_json(r["error"]))
            else:
                out.append(r.get("result"))
        return out

    # --- one method per RPC method -------------------------------------------------------------
    def list_problems(self) -> list[dict[str, Any]]:
        return self.call("daimon_listProblems")  # type: ignore[no-any-return]

    def get_problem(self, chain: HexLike) -> dict[str, Any]:
        return self.call("daimon_getProblem", to_hex(chain))  # type: ignore[no-any-return]

    def block_number(self, chain: HexLike) -> int:
        return self.call("daimon_blockNumber", to_hex(chain))  # type: ignore[no-any-return]

    def get_block_by_number(self, chain: HexLike, number: int) -> dict[str, Any] | None:
        return self.call("daimon_getBlockByNumber", to_hex(chain), number)  # type: ignore[no-any-return]

    def get_block_by_hash(self, chain: HexLike, block_hash: HexLike) -> dict[str, Any] | None:
        return self.call("daimon_getBlockByHash", to_hex(chain), to_hex(block_hash))  # type: ignore[no-any-return]

    def get_balance(self, chain: HexLike, address: HexLike) -> dict[str, int]:
        """``{"spendable": int, "locked": int}``: the decimal strings of the wire, parsed."""
        raw = self.call("daimon_getBalance", to_hex(chain), to_hex(address))
        return {"spendable": int(raw["spendable"]), "locked": int(raw["locked"])}

    def get_nonce(self, chain: HexLike, address: HexLike) -> int:
        return self.call("daimon_getNonce", to_hex(chain), to_hex(address))  # type: ignore[no-any-return]

    def best_model(self, chain: HexLike) -> dict[str, Any] | None:
        return self.call("daimon_bestModel", to_hex(chain))  # type: ignore[no-any-return]

    def confirmed_model(self, chain: HexLike) -> dict[str, Any] | None:
        return self.call("daimon_confirmedModel", to_hex(chain))  # type: ignore[no-any-return]

    def get_locks(self, chain: HexLike, address: HexLike) -> dict[str, Any]:
        return self.call("daimon_getLocks", to_hex(chain), to_hex(address))  # type: ignore[no-any-return]

    def get_bond(self, chain: HexLike, validator: HexLike) -> dict[str, Any] | None:
        return self.call("daimon_getBond", to_hex(chain), to_hex(validator))  # type: ignore[no-any-return]

    def get_channel(self, chain: HexLike, payer: HexLike, runner: HexLike) -> dict[str, Any] | None:
        return self.call("daimon_getChannel", to_hex(chain), to_hex(payer), to_hex(runner))  # type: ignore[no-any-return]

    def period(self, chain: HexLike) -> dict[str, Any]:
        return self.call("daimon_period", to_hex(chain))  # type: ignore[no-any-return]

    def send_raw_transaction(self, chain: HexLike, raw: HexLike) -> str:
        return self.call("daimon_sendRawTransaction", to_hex(chain), to_hex(raw))  # type: ignore[no-any-return]

    def submit_proof(self, chain: HexLike, raw: HexLike) -> str:
        return self.call("daimon_submitProof", to_hex(chain), to_hex(raw))  # type: ignore[no-any-return]

    def submit_vote(self, chain: HexLike, raw: HexLike) -> str:
        return self.call("daimon_submitVote", to_hex(chain), to_hex(raw))  # type: ignore[no-any-return]

    def submit_reveal(self, chain: HexLike, raw: HexLike) -> str:
        return self.call("daimon_submitReveal", to_hex(chain), to_hex(raw))  # type: ignore[no-any-return]

    def submit_test_tuple(self, chain: HexLike, raw: HexLike) -> str:
        return self.call("daimon_submitTestTuple", to_hex(chain), to_hex(raw))  # type: ignore[no-any-return]

    def submit_model(self, chain: HexLike, raw: HexLike, prover: HexLike) -> str:
        return self.call("daimon_submitModel", to_hex(chain), to_hex(raw), to_hex(prover))  # type: ignore[no-any-return]

    def get_content(self, content_id: HexLike) -> bytes:
        """A content object's bytes, checked against their id (SHA-256)."""
        want = to_hex(content_id)
        raw = bytes.fromhex(self.call("daimon_getContent", want)[2:])
        if "0x" + hashlib.sha256(raw).hexdigest() != want.lower():
            raise RpcConnectionError(f"content from the node does not hash to {want}")
        return raw

    def peer_count(self) -> int:
        return self.call("daimon_peerCount")  # type: ignore[no-any-return]

    def peers(self) -> list[dict[str, Any]]:
        return self.call("daimon_peers")  # type: ignore[no-any-return]

    def syncing(self) -> bool | list[dict[str, Any]]:
        return self.call("daimon_syncing")  # type: ignore[no-any-return]

    def node_info(self) -> dict[str, Any]:
        return self.call("daimon_nodeInfo")  # type: ignore[no-any-return]

    def get_offers(self, chain: HexLike) -> list[dict[str, Any]]:
        return self.call("daimon_getOffers", to_hex(chain))  # type: ignore[no-any-return]

    def get_reputation(self, chain: HexLike, address: HexLike) -> dict[str, Any]:
        return self.call("daimon_getReputation", to_hex(chain), to_hex(address))  # type: ignore[no-any-return]

    def health(self) -> tuple[int, dict[str, Any]]:
        """``GET /health``: (HTTP status, body)."""
        conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        try:
            conn.request("GET", "/health")
            resp = conn.getresponse()
            return resp.status, json.loads(resp.read())
        except (OSError, http.client.HTTPException, ValueError) as exc:
            raise RpcConnectionError(f"cannot reach node at {self.url}: {exc}") from None
        finally:
            conn.close()


def _result(reply: Any) -> Any:
    if not isinstance(reply, dict):
        raise RpcConnectionError(f"unexpected reply: {reply!r:.200}")
    if "error" in reply:
        raise error_from_json(reply["error"])
    return reply.get("result")


def subscribe(url: str, topic: str, chain: HexLike, *, timeout: float | None = 30.0) -> Iterator[Any]:
    """Follow ``topic`` ("newHeads", "proofs", "votes", "txs") on ``chain`` over ``ws://host:port/ws``.

    Yields each notification's ``result``; stops when the node closes the socket.
    ``timeout`` bounds the wait for each message (``socket.timeout`` when it runs out).
    """
    from wsproto import ConnectionType, WSConnection
    from wsproto.events import AcceptConnection, CloseConnection, Ping, RejectConnection, Request, TextMessage

    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    ws = WSConnection(ConnectionType.CLIENT)
    sock = socket.create_connection((host, port), timeout=timeout)
    try:
        sock.sendall(ws.send(Request(host=f"{host}:{port}", target=parts.path or "/ws")))
        request = {"jsonrpc": "2.0", "id": 1, "method": "daimon_subscribe", "params": [topic, to_hex(chain)]}
        subscribed = False
        text: list[str] = []
        while True:
            data = sock.recv(65536)
            if not data:
                return
            ws.receive_data(data)
            for event in ws.events():
                if isinstance(event, AcceptConnection):
                    sock.sendall(ws.send(TextMessage(data=json.dumps(request))))
                elif isinstance(event, RejectConnection):
                    raise RpcConnectionError(f"WebSocket upgrade refused by {url}: HTTP {event.status_code}")
                elif isinstance(event, Ping):
                    sock.sendall(ws.send(event.response()))
                elif isinstance(event, CloseConnection):
                    return
                elif isinstance(event, TextMessage):
                    text.append(event.data)
                    if not event.message_finished:
                        continue
                    message, text = json.loads("".join(text)), []
                    if not subscribed:
                        _result(message)  # raises the typed error if the subscription was refused
                        subscribed = True
                    elif message.get("method") == "daimon_subscription":
                        yield message["params"]["result"]
    finally:
        sock.close()


__all__ = ["RpcClient", "RpcConnectionError", "RpcError", "subscribe", "to_hex"]
