"""HTTP/1.1 + WebSocket transport for the dispatcher, on trio with h11 and wsproto.

Why not starlette/hypercorn: on this 2-core machine the framework is the ceiling
(``notes/http.md``: ~1,800 req/s through starlette on hypercorn's trio worker, below the
2,000 req/s target). h11 and wsproto are the sans-io parsers hypercorn itself uses,
so parsing stays in well-kept libraries while a request costs one h11 parse, one
dispatch and one ``send_all`` of the whole response.

Routes: ``POST /`` JSON-RPC; ``GET /health``; ``GET /metrics``; ``GET /ws`` WebSocket
(JSON-RPC plus ``daimon_subscribe``/``daimon_unsubscribe``). Every connection runs in
its own task behind a catch-all, so nothing a client sends can stop the server.
"""

from __future__ import annotations

import json
import logging
import math
from http import HTTPStatus
from dataclasses import dataclass
from functools import partial
from typing import Any, Final

import h11
import trio
from wsproto.connection import Connection as WsConnection
from wsproto.connection import ConnectionState, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Message, Ping, TextMessage
from wsproto.utilities import ProtocolError as WsProtocolError
from wsproto.utilities import generate_accept_token

from daimon_node.rpc.api import CHAIN, RpcBackend
from daimon_node.rpc.dispatcher import Dispatcher, DispatchLimits, ExtraMethod
from daimon_node.rpc.errors import InvalidParams, RequestTooLarge
from daimon_node.rpc.events import DEFAULT_QUEUE_SIZE, EventHub, Subscriber
from daimon_node.rpc.metrics import CONTENT_TYPE, MetricsRegistry

log = logging.getLogger("daimon.rpc.server")

RECEIVE_SIZE: Final[int] = 64 * 1024
JSON_TYPE: Final[bytes] = b"application/json"
SERVER_HEADER: Final[tuple[bytes, bytes]] = (b"server", b"daimon-node")


@dataclass(frozen=True)
class ServerConfig:
    """Limits of the RPC server; the node fills these from its ``[rpc]`` config."""

    max_request_bytes: int = 4 * 1024 * 1024  # body of one HTTP request or WebSocket message
    max_header_bytes: int = 16 * 1024  # request line + headers; more gets 431
    max_batch: int = 100  # requests in one JSON-RPC batch
    max_connections: int = 512  # beyond this, requests get 503 and the connection is closed
    idle_timeout: float = 60.0  # seconds a keep-alive connection may sit between requests
    read_timeout: float = 10.0  # seconds to receive a whole request once it has started
    ws_queue_size: int = DEFAULT_QUEUE_SIZE  # notifications buffered per WebSocket session
    ws_idle_timeout: float = 90.0  # a WebSocket silent this long (pings go out every third of it) is closed


class _TooLarge(Exception):
    """The request body is over ``max_request_bytes``."""


class RpcServer:
    """Owns the dispatcher, the event hub and the metrics registry; ``serve`` runs it.

    The node builds one, wires ``events`` and ``metrics`` into its components, then
    ``port = await nursery.start(server.serve, host, port)``.
    """

    def __init__(self, backend: RpcBackend, *, config: ServerConfig = ServerConfig(),
                 events: EventHub | None = None, metrics: MetricsRegistry | None = None) -> None:
        self.backend = backend
        self.config = config
        self.metrics = metrics if metrics is not None else MetricsRegistry()
        self.events = events if events is not None else EventHub(queue_size=config.ws_queue_size,
                                                                 metrics=self.metrics)
        self.dispatcher = Dispatcher(backend, metrics=self.metrics,
                                     limits=DispatchLimits(config.max_request_bytes, config.max_batch))
        self.connections = 0
        self._responses = self.metrics.counter("daimon_rpc_http_responses", "HTTP responses by status",
                                               ["status"])
        self._response_children: dict[int, Any] = {}
        self.metrics.gauge("daimon_rpc_connections", "Open HTTP/WebSocket connections",
                           function=lambda: float(self.connections))

    def count_response(self, status: int) -> None:
        child = self._response_children.get(status)
        if child is None:
            child = self._response_children[status] = self._responses.labels(str(status))
        child.inc()

    async def serve(self, host: str, port: int, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Listen on ``host:port`` (0 = ephemeral) and serve until cancelled; reports the bound port."""
        listeners = await trio.open_tcp_listeners(port, host=host)
        bound = listeners[0].socket.getsockname()[1]
        async with trio.open_nursery() as nursery:
            await nursery.start(partial(trio.serve_listeners, self._handle_connection, listeners))
            log.info("JSON-RPC listening on http://%s:%d", host, bound)
            task_status.started(bound)

    async def _handle_connection(self, stream: trio.SocketStream) -> None:
        self.connections += 1
        try:
            await _HttpConnection(self, stream).run()
        except (trio.BrokenResourceError, trio.ClosedResourceError, h11.ProtocolError, WsProtocolError) as exc:
            log.debug("connection ended: %r", exc)
        except Exception:
            log.exception("unexpected error on an RPC connection")
        finally:
            self.connections -= 1
            await trio.aclose_forcefully(stream)


class _HttpConnection:
    """One TCP connection: h11 request loop, possibly upgraded to a WebSocket session."""

    def __init__(self, server: RpcServer, stream: trio.SocketStream) -> None:
        self.server = server
        self.config = server.config
        self.stream = stream
        self.conn = h11.Connection(h11.SERVER, max_incomplete_event_size=self.config.max_header_bytes)
        self.method = b""  # of the request being answered; HEAD gets headers only
        self.timeout_scope = trio.CancelScope()  # deadline set only while waiting for the client

    async def run(self) -> None:
        # One cancel scope for the connection's life, its deadline moved around each read:
        # cheaper than a scope per read, which shows on a loaded 2-core machine.
        with self.timeout_scope:
            await self._serve_requests()

    async def _serve_requests(self) -> None:
        conn = self.conn
        while True:
            try:
                request = await self._next_request()
                if request is None:
                    return
                self.method = request.method
                body = await self._read_body(request)
            except _TooLarge:
                self.server.dispatcher.count_refusal(RequestTooLarge.LIMIT)
                await self._respond(413, JSON_TYPE, _error_body("request body too large"), close=True)
                return
            except h11.RemoteProtocolError as exc:
                await self._respond_if_possible(exc.error_status_hint, f"bad request: {exc}")
                return
            if self.server.connections > self.config.max_connections:
                await self._respond(503, JSON_TYPE, _error_body("too many connections"), close=True)
                return
            if request.target.split(b"?", 1)[0] == b"/ws" and _is_websocket_upgrade(request):
                await self._upgrade(request)
                return
            await self._route(request, body)
            if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                return  # MUST_CLOSE (Connection: close, HTTP/1.0) or an unread body
            conn.start_next_cycle()

    # --- reading -----------------------------------------------------------------------
    async def _receive(self, deadline: float) -> None:
        """Feed h11 the next bytes; past ``deadline`` the connection's scope is cancelled and it closes."""
        self.timeout_scope.deadline = deadline
        data = await self.stream.receive_some(RECEIVE_SIZE)
        self.timeout_scope.deadline = math.inf
        self.conn.receive_data(data)

    async def _next_request(self) -> h11.Request | None:
        """The next request's head; None when the client closed the connection cleanly."""
        deadline = trio.current_time() + self.config.idle_timeout
        started = False
        while True:
            event = self.conn.next_event()
            if event is h11.NEED_DATA:
                if not started:
                    started = True
                    if not self.conn.trailing_data[0]:  # nothing buffered: the idle wait
                        await self._receive(deadline)
                    # from the first byte of a head on, the rest must come within read_timeout
                    deadline = trio.current_time() + self.config.read_timeout
                    continue
                await self._receive(deadline)
                continue
            if isinstance(event, h11.Request):
                # h11 caps only a head still incomplete; one that arrives whole is checked here.
                size = len(event.target) + sum(len(n) + len(v) + 4 for n, v in event.headers)
                if size > self.config.max_header_bytes:
                    raise h11.RemoteProtocolError("request header too large", error_status_hint=431)
                return event
            if isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
                return None
            raise h11.RemoteProtocolError(f"unexpected {type(event).__name__}", error_status_hint=400)

    async def _read_body(self, request: h11.Request) -> bytes:
        limit = self.config.max_request_bytes
        for name, value in request.headers:
            if name == b"content-length" and int(value) > limit:
                raise _TooLarge
        deadline = trio.current_time() + self.config.read_timeout
        chunks: list[bytes] = []
        size = 0
        while True:
            event = self.conn.next_event()
            if event is h11.NEED_DATA:
                await self._receive(deadline)
            elif isinstance(event, h11.Data):
                size += len(event.data)
                if size > limit:
                    raise _TooLarge
                chunks.append(event.data)
            elif isinstance(event, h11.EndOfMessage):
                return b"".join(chunks)
            elif isinstance(event, h11.ConnectionClosed):
                raise h11.RemoteProtocolError("connection closed mid-request", error_status_hint=400)

    # --- routing -----------------------------------------------------------------------
    async def _route(self, request: h11.Request, body: bytes) -> None:
        path = request.target.split(b"?", 1)[0]
        method = request.method
        if method in (b"GET", b"HEAD") and (path == b"/" or path.startswith(b"/web/")):
            page = _static(path)  # the web page (daimon_node/web/), same server as JSON-RPC
            if page is None:
                await self._respond(404, JSON_TYPE, _error_body("not found"))
            else:
                await self._respond(200, page[0], page[1])
        elif path == b"/":
            if method != b"POST":
                await self._respond(405, JSON_TYPE, _error_body("JSON-RPC takes POST /"), allow=b"POST")
                return
            reply = await self.server.dispatcher.handle(body)
            if reply is None:
                await self._respond(204, None, b"")
            else:
                await self._respond(200, JSON_TYPE, reply)
        elif path in (b"/health", b"/metrics", b"/ws"):
            if method != b"GET":
                await self._respond(405, JSON_TYPE, _error_body(f"{path.decode()} takes GET"), allow=b"GET")
            elif path == b"/health":
                status, payload = await self._health()
                await self._respond(status, JSON_TYPE, payload)
            elif path == b"/metrics":
                await self._respond(200, CONTENT_TYPE.encode(), self.server.metrics.render())
            else:
                await self._respond(426, JSON_TYPE, _error_body("/ws needs a WebSocket upgrade"),
                                    extra=[(b"upgrade", b"websocket"), (b"sec-websocket-version", b"13")])
        else:
            await self._respond(404, JSON_TYPE, _error_body("not found: POST / (JSON-RPC), GET /health, "
                                                              "GET /metrics, GET /ws (WebSocket)"))

    async def _health(self) -> tuple[int, bytes]:
        """200 when the backend says healthy, else 503; a failing backend is unhealthy too."""
        try:
            info = await self.server.backend.node_info()
            chains = [{"chain": c["chain"], "height": c["height"]} for c in info.get("chains", [])]
            healthy = bool(info.get("healthy", False))
            payload: dict[str, Any] = {
                "status": "ok" if healthy else "unhealthy",
                "height": max((c["height"] for c in chains), default=-1),
                "peers": info.get("peers", 0),
                "chains": chains,
            }
            if not healthy and "reason" in info:
                payload["reason"] = info["reason"]
        except Exception:
            log.exception("node_info failed in /health")
            healthy, payload = False, {"status": "error", "reason": "node_info failed"}
        return (200 if healthy else 503), json.dumps(payload, separators=(",", ":")).encode()

    # --- writing -----------------------------------------------------------------------
    async def _respond(self, status: int, content_type: bytes | None, body: bytes, *, close: bool = False,
                       allow: bytes | None = None, extra: list[tuple[bytes, bytes]] | None = None) -> None:
        headers = [SERVER_HEADER]
        if content_type is not None:
            headers.append((b"content-type", content_type))
        if status != 204:
            headers.append((b"content-length", str(len(body)).encode()))
        if close:
            headers.append((b"connection", b"close"))
        if allow is not None:
            headers.append((b"allow", allow))
        if extra:
            headers.extend(extra)
        conn = self.conn
        data = conn.send(h11.Response(status_code=status, headers=headers, reason=_reason(status)))
        if body and self.method != b"HEAD":
            data += conn.send(h11.Data(data=body))  # type: ignore[operator]
        data += conn.send(h11.EndOfMessage())  # type: ignore[operator]
        self.server.count_response(status)
        await self.stream.send_all(data)  # type: ignore[arg-type]

    async def _respond_if_possible(self, status: int, message: str) -> None:
        """Answer a malformed request with ``status`` if h11 still allows a response, then close."""
        if self.conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            try:
                await self._respond(status, JSON_TYPE, _error_body(message[:200]), close=True)
            except h11.LocalProtocolError:
                pass

    # --- WebSocket -----------------------------------------------------------------------
    async def _upgrade(self, request: h11.Request) -> None:
        headers = dict(request.headers)
        key = headers.get(b"sec-websocket-key")
        if not key or headers.get(b"sec-websocket-version") != b"13":
            await self._respond(426, JSON_TYPE, _error_body("WebSocket version 13 with a key is required"),
                                close=True, extra=[(b"sec-websocket-version", b"13")])
            return
        self.server.count_response(101)
        await self.stream.send_all(self.conn.send(h11.InformationalResponse(status_code=101, headers=[  # type: ignore[arg-type]
            (b"upgrade", b"websocket"), (b"connection", b"Upgrade"),
            (b"sec-websocket-accept", generate_accept_token(key)), SERVER_HEADER])))
        trailing, _ = self.conn.trailing_data
        ws = WsConnection(ConnectionType.SERVER, trailing_data=trailing)
        await _WebSocketSession(self.server, self.stream, ws).run()


class _WebSocketSession:
    """JSON-RPC over one WebSocket, plus subscriptions fed from the event hub."""

    def __init__(self, server: RpcServer, stream: trio.SocketStream, ws: WsConnection) -> None:
        self.server = server
        self.stream = stream
        self.ws = ws
        self.send_lock = trio.Lock()
        self.subscriber: Subscriber = server.events.attach()
        self.extra: dict[str, ExtraMethod] = {
            "daimon_subscribe": self._subscribe,
            "daimon_unsubscribe": self._unsubscribe,
        }

    async def run(self) -> None:
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._write_notifications)
                nursery.start_soon(self._ping)
                nursery.start_soon(self._close_when_dropped, nursery.cancel_scope)
                await self._read_messages()
                nursery.cancel_scope.cancel()
        finally:
            self.server.events.detach(self.subscriber)

    async def _send(self, event: Message | CloseConnection | Any) -> None:
        async with self.send_lock:
            if self.ws.state in (ConnectionState.OPEN, ConnectionState.REMOTE_CLOSING):
                await self.stream.send_all(self.ws.send(event))

    async def _read_messages(self) -> None:
        limit = self.server.config.max_request_bytes
        parts: list[bytes] = []
        size = 0
        while True:
            for event in self.ws.events():
                if isinstance(event, (TextMessage, BytesMessage)):
                    data = event.data.encode() if isinstance(event, TextMessage) else bytes(event.data)
                    size += len(data)
                    if size > limit:
                        await self._send(CloseConnection(code=1009, reason="message too large"))
                        return
                    parts.append(data)
                    if event.message_finished:
                        message, parts, size = b"".join(parts), [], 0
                        reply = await self.server.dispatcher.handle(message, self.extra)
                        if reply is not None:
                            await self._send(TextMessage(data=reply.decode()))
                elif isinstance(event, Ping):
                    await self._send(event.response())
                elif isinstance(event, CloseConnection):
                    await self._send(event.response())
                    return
            with trio.move_on_after(self.server.config.ws_idle_timeout) as idle:
                data = await self.stream.receive_some(RECEIVE_SIZE)
            if idle.cancelled_caught:  # not even a pong: a dead peer or a half-sent frame
                with trio.move_on_after(1.0):
                    await self._send(CloseConnection(code=1001, reason="idle"))
                return
            if not data:
                return
            self.ws.receive_data(data)

    async def _ping(self) -> None:
        """Keep live clients talking (their pongs reset the idle timer) so that dead ones can be told apart."""
        while True:
            await trio.sleep(self.server.config.ws_idle_timeout / 3)
            await self._send(Ping(payload=b"daimon"))

    async def _write_notifications(self) -> None:
        async for message in self.subscriber.receive_channel:
            await self._send(TextMessage(data=message.decode()))

    async def _close_when_dropped(self, scope: trio.CancelScope) -> None:
        await self.subscriber.dropped.wait()
        with trio.move_on_after(1.0):  # the peer may not be reading at all
            await self._send(CloseConnection(code=1008, reason="subscriber too slow"))
        scope.cancel()

    async def _subscribe(self, params: Any) -> str:
        if isinstance(params, dict):
            params = [params.get("topic"), params.get("chain")]
        if not isinstance(params, list) or len(params) != 2 or type(params[0]) is not str:
            raise InvalidParams('daimon_subscribe takes [topic, chain], e.g. ["newHeads", "0x..."]')
        chain = CHAIN.parse("chain", params[1])
        await self.server.backend.block_number(chain)  # NotFound for an unknown chain
        return self.server.events.subscribe(self.subscriber, params[0], chain)

    async def _unsubscribe(self, params: Any) -> bool:
        if isinstance(params, dict):
            params = [params.get("subscription")]
        if not isinstance(params, list) or len(params) != 1 or type(params[0]) is not str:
            raise InvalidParams("daimon_unsubscribe takes [subscription id]")
        return self.server.events.unsubscribe(self.subscriber, params[0])


_STATIC_TYPES = {".html": b"text/html; charset=utf-8", ".js": b"text/javascript; charset=utf-8",
                 ".css": b"text/css; charset=utf-8", ".svg": b"image/svg+xml"}


def _static(path: bytes) -> tuple[bytes, bytes] | None:
    """A file of the package directory ``daimon_node/web/`` (no subdirectories, no dot files)."""
    from pathlib import Path

    name = "index.html" if path == b"/" else path[len(b"/web/"):].decode("ascii", "replace")
    if "/" in name or "\\" in name or name.startswith(".") or Path(name).suffix not in _STATIC_TYPES:
        return None
    file = Path(__file__).resolve().parent.parent / "web" / name
    if not file.is_file():
        return None
    return _STATIC_TYPES[file.suffix], file.read_bytes()


def _is_websocket_upgrade(request: h11.Request) -> bool:
    upgrade = connection = b""
    for name, value in request.headers:
        if name == b"upgrade":
            upgrade = value.lower()
        elif name == b"connection":
            connection = value.lower()
    return request.method == b"GET" and upgrade == b"websocket" and b"upgrade" in connection


_REASONS: Final[dict[int, bytes]] = {s.value: s.phrase.encode() for s in HTTPStatus}


def _reason(status: int) -> bytes:
    return _REASONS.get(status, b"")


def _error_body(message: str) -> bytes:
    return json.dumps({"error": message}).encode()


async def serve_rpc(backend: RpcBackend, host: str, port: int, *,
                    task_status: Any = trio.TASK_STATUS_IGNORED, config: ServerConfig = ServerConfig(),
                    events: EventHub | None = None, metrics: MetricsRegistry | None = None) -> None:
    """Serve JSON-RPC for ``backend`` until cancelled: ``port = await nursery.start(serve_rpc, ...)``.

    Pass the ``events`` hub and ``metrics`` registry the node publishes to (or build an
    ``RpcServer`` first and use its ``events``/``metrics``, then ``nursery.start(server.serve, ...)``).
    """
    server = RpcServer(backend, config=config, events=events, metrics=metrics)
    await server.serve(host, port, task_status=task_status)


__all__ = ["RpcServer", "ServerConfig", "serve_rpc"]
