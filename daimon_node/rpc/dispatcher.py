"""JSON-RPC 2.0 dispatcher: request bytes in, response bytes out, no sockets.

Kept apart from the transport (as trinity's ``RPCServer`` is) so that HTTP and
WebSocket share one implementation of the protocol, and so that every rule of the
spec can be tested without a server. ``daimon_<camelCase>`` names map to backend
methods through ``api.METHODS``; params are validated and decoded there before the
backend runs; typed errors become their codes; anything else is logged and answered
as -32603 with no traceback on the wire.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Final, Mapping

from prometheus_client import Counter, Histogram

from .api import METHODS, MethodSpec, RpcBackend
from .errors import InternalError, InvalidParams, InvalidRequest, MethodNotFound, ParseError, RpcError
from .metrics import MetricsRegistry

log = logging.getLogger("daimon.rpc")

# A method a transport adds for its own connections (WebSocket ``daimon_subscribe``):
# it receives the raw ``params`` (list or dict) and validates them itself.
ExtraMethod = Callable[[Any], Awaitable[Any]]
WS_ONLY: Final[frozenset[str]] = frozenset({"daimon_subscribe", "daimon_unsubscribe"})


@dataclass(frozen=True)
class DispatchLimits:
    """Caps applied before any work is done on a request."""

    max_request_bytes: int = 4 * 1024 * 1024  # a reveal of 1M labels is 2 MB of hex
    max_batch: int = 100  # requests in one batch


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def error_response(request_id: Any, err: RpcError) -> bytes:
    """One JSON-RPC error response, encoded."""
    return _dumps({"jsonrpc": "2.0", "id": request_id, "error": err.to_json()})


def _valid_id(value: Any) -> bool:
    return value is None or type(value) in (str, int, float)


class Dispatcher:
    """Executes JSON-RPC requests against an ``RpcBackend`` and keeps RPC metrics."""

    def __init__(self, backend: RpcBackend, *, metrics: MetricsRegistry | None = None,
                 limits: DispatchLimits = DispatchLimits()) -> None:
        self.backend = backend
        self.limits = limits
        self.metrics = metrics if metrics is not None else MetricsRegistry()
        self._methods: dict[str, tuple[MethodSpec, Callable[..., Awaitable[Any]]]] = {
            name: (spec, getattr(backend, spec.backend_name)) for name, spec in METHODS.items()
        }
        self._requests: Counter = self.metrics.counter(
            "daimon_rpc_requests", "JSON-RPC calls by method (unknown methods count as 'unknown')", ["method"])
        self._errors: Counter = self.metrics.counter(
            "daimon_rpc_errors", "JSON-RPC error responses by code", ["code"])
        self._latency: Histogram = self.metrics.histogram(
            "daimon_rpc_request_duration_seconds", "Time to execute one JSON-RPC call", ["method"])
        self._children: dict[str, tuple[Any, Any]] = {}  # method -> (counter child, histogram child)

    # --- entry point ---------------------------------------------------------------------
    async def handle(self, body: bytes, extra: Mapping[str, ExtraMethod] | None = None) -> bytes | None:
        """Answer one HTTP body or WebSocket message; None when nothing must be sent back.

        ``extra`` adds transport-specific methods (the WebSocket session's subscribe
        and unsubscribe) on top of the backend's.
        """
        if len(body) > self.limits.max_request_bytes:
            return self._fail(None, InvalidRequest(
                f"request of {len(body)} bytes exceeds the limit of {self.limits.max_request_bytes}"))
        try:
            message = json.loads(body)
        except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
            return self._fail(None, ParseError(f"parse error: {str(exc)[:120]}"))
        if isinstance(message, list):
            return await self._handle_batch(message, extra)
        return await self._handle_one(message, extra)

    async def _handle_batch(self, batch: list[Any], extra: Mapping[str, ExtraMethod] | None) -> bytes | None:
        if not batch:
            return self._fail(None, InvalidRequest("empty batch"))
        if len(batch) > self.limits.max_batch:
            return self._fail(None, InvalidRequest(
                f"batch of {len(batch)} requests exceeds the limit of {self.limits.max_batch}"))
        parts = [part for part in [await self._handle_one(m, extra) for m in batch] if part is not None]
        if not parts:
            return None  # a batch of notifications only
        return b"[" + b",".join(parts) + b"]"

    async def _handle_one(self, message: Any, extra: Mapping[str, ExtraMethod] | None) -> bytes | None:
        # An invalid request object is always answered (id null when unknown), as the
        # spec's examples do: without a valid shape it cannot be told to be a notification.
        if not isinstance(message, dict):
            return self._fail(None, InvalidRequest("a request must be a JSON object"))
        is_notification = "id" not in message
        request_id = message.get("id")
        if not _valid_id(request_id):
            return self._fail(None, InvalidRequest("id must be a string, a number or null"))
        if message.get("jsonrpc") != "2.0":
            return self._fail(request_id, InvalidRequest('jsonrpc must be "2.0"'))
        method = message.get("method")
        if type(method) is not str:
            return self._fail(request_id, InvalidRequest("method must be a string"))
        params = message.get("params", [])
        if not isinstance(params, (list, dict)):
            return self._fail(request_id, InvalidRequest("params must be an array or an object"))
        result, error = await self._call(method, params, extra)
        return self._reply(is_notification, request_id, result=result, error=error)

    # --- execution -----------------------------------------------------------------------
    async def _call(self, method: str, params: list[Any] | dict[str, Any],
                    extra: Mapping[str, ExtraMethod] | None) -> tuple[Any, RpcError | None]:
        started = time.perf_counter()
        label = method
        try:
            if extra is not None and method in extra:
                result = await extra[method](params)
            else:
                entry = self._methods.get(method)
                if entry is None:
                    label = "unknown"
                    if method in WS_ONLY:
                        raise MethodNotFound(f"{method} is only available over WebSocket (/ws)")
                    raise MethodNotFound(f"method not found: {method[:80]}")
                spec, func = entry
                result = await func(*bind_params(spec, params))
            return result, None
        except RpcError as err:
            return None, err
        except Exception:
            log.exception("RPC method %s failed", method)
            return None, InternalError("internal error")
        finally:
            counter, histogram = self._child(label)
            counter.inc()
            histogram.observe(time.perf_counter() - started)

    def _child(self, label: str) -> tuple[Any, Any]:
        children = self._children.get(label)
        if children is None:
            children = (self._requests.labels(label), self._latency.labels(label))
            self._children[label] = children
        return children

    def _reply(self, is_notification: bool, request_id: Any, *, result: Any = None,
               error: RpcError | None = None) -> bytes | None:
        if error is not None:
            self._errors.labels(str(error.code)).inc()
            return None if is_notification else error_response(request_id, error)
        if is_notification:
            return None
        try:
            return _dumps({"jsonrpc": "2.0", "id": request_id, "result": result})
        except (TypeError, ValueError):
            log.exception("RPC result is not JSON-serialisable: %r", result)
            return self._fail(request_id, InternalError("internal error"))

    def _fail(self, request_id: Any, err: RpcError) -> bytes:
        self._errors.labels(str(err.code)).inc()
        return error_response(request_id, err)


def bind_params(spec: MethodSpec, params: list[Any] | dict[str, Any]) -> list[Any]:
    """Positional or named params checked against ``spec`` and decoded, in order."""
    names = [p.name for p in spec.params]
    if isinstance(params, list):
        if len(params) != len(spec.params):
            raise InvalidParams(f"{spec.rpc_name} takes {len(names)} params {names}, got {len(params)}")
        return [p.kind.parse(p.name, v) for p, v in zip(spec.params, params)]
    unknown = sorted(set(params) - set(names))
    if unknown:
        raise InvalidParams(f"{spec.rpc_name}: unknown params {unknown}; expected {names}")
    missing = [n for n in names if n not in params]
    if missing:
        raise InvalidParams(f"{spec.rpc_name}: missing params {missing}")
    return [p.kind.parse(p.name, params[p.name]) for p in spec.params]


__all__ = ["Dispatcher", "DispatchLimits", "ExtraMethod", "bind_params", "error_response"]
