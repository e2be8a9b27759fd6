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
import math
import re
import sys
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Final, Mapping, NoReturn

from prometheus_client import Counter, Histogram

from daimon_node.rpc.api import METHODS, MethodSpec, RpcBackend
from daimon_node.rpc.errors import (
    BatchTooLarge,
    InternalError,
    InvalidParams,
    InvalidRequest,
    LimitExceeded,
    MethodNotFound,
    NestingTooDeep,
    NumberTooLarge,
    ParseError,
    RequestTooLarge,
    RpcError,
)
from daimon_node.rpc.metrics import MetricsRegistry

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
    """Replies are ASCII: a lone surrogate (``"\\ud800"`` is valid JSON) in an id or a method name
    goes back escaped as it came, where UTF-8 could not encode it at all."""
    return json.dumps(obj, separators=(",", ":"), allow_nan=False).encode()


def _refuse_constant(token: str) -> NoReturn:
    raise ParseError(f"parse error: {token} is not JSON (RFC 8259 has no NaN or Infinity)")


def parse_json(body: bytes) -> Any:
    """The request's JSON, with the parser's own limits turned into typed errors.

    Python refuses to convert an integer of more than ``sys.get_int_max_str_digits()``
    (4,300) digits, because the conversion is quadratic; that refusal is a plain
    ``ValueError``, told apart from a syntax error (``JSONDecodeError``) by its type and
    confirmed by the run of digits in the body. The limits cost nothing on the common
    path: no per-number hook.
    """
    try:
        return json.loads(body, parse_constant=_refuse_constant)
    except RecursionError:
        cap = sys.getrecursionlimit()
        raise NestingTooDeep(f"JSON nested deeper than the parser allows (about {cap} levels)",
                             value=None, cap=cap) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ParseError(f"parse error: {str(exc)[:120]}") from None
    except ValueError as exc:
        cap = sys.get_int_max_str_digits()
        runs = [len(run) for run in re.findall(rb"[0-9]{%d,}" % (cap + 1), body)]
        if not runs:
            raise ParseError(f"parse error: {str(exc)[:120]}") from None
        raise NumberTooLarge(f"an integer of more than {cap} digits", value=max(runs), cap=cap) from None


def error_response(request_id: Any, err: RpcError) -> bytes:
    """One JSON-RPC error response, encoded."""
    return _dumps({"jsonrpc": "2.0", "id": request_id, "error": err.to_json()})


def _valid_id(value: Any) -> bool:
    """An id the reply can echo: ``1e400`` parses to infinity, which JSON cannot write."""
    return value is None or type(value) in (str, int) or (type(value) is float and math.isfinite(value))


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
        self._refused: Counter = self.metrics.counter(
            "daimon_rpc_refused", "Requests refused for a server limit (413s included)", ["limit"])
        self._children: dict[str, tuple[Any, Any]] = {}  # method -> (counter child, histogram child)

    # --- entry point ---------------------------------------------------------------------
    async def handle(self, body: bytes, extra: Mapping[str, ExtraMethod] | None = None) -> bytes | None:
        """Answer one HTTP body or WebSocket message; None when nothing must be sent back.

        ``extra`` adds transport-specific methods (the WebSocket session's subscribe
        and unsubscribe) on top of the backend's.
        """
        try:
            return await self._handle_body(body, extra)
        except Exception:  # a bug: the client still gets a JSON-RPC answer, not a dropped connection
            log.exception("JSON-RPC body failed outside any method: %r", body[:200])
            return self._fail(None, InternalError("internal error"))

    def count_refusal(self, limit: str) -> None:
        """Count a request refused for ``limit`` (the transport's 413s come through here too)."""
        self._refused.labels(limit).inc()

    async def _handle_body(self, body: bytes, extra: Mapping[str, ExtraMethod] | None) -> bytes | None:
        if len(body) > self.limits.max_request_bytes:
            return self._fail(None, RequestTooLarge(
                f"request of {len(body)} bytes exceeds the limit of {self.limits.max_request_bytes}",
                value=len(body), cap=self.limits.max_request_bytes))
        try:
            message = parse_json(body)
        except RpcError as err:
            return self._fail(None, err)
        if isinstance(message, list):
            return await self._handle_batch(message, extra)
        return await self._handle_one(message, extra)

    async def _handle_batch(self, batch: list[Any], extra: Mapping[str, ExtraMethod] | None) -> bytes | None:
        if not batch:
            return self._fail(None, InvalidRequest("empty batch"))
        if len(batch) > self.limits.max_batch:
            return self._fail(None, BatchTooLarge(
                f"batch of {len(batch)} requests exceeds the limit of {self.limits.max_batch}",
                value=len(batch), cap=self.limits.max_batch))
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
            return self._fail(None, InvalidRequest("id must be a string, a finite number or null"))
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
        if isinstance(err, LimitExceeded):
            self.count_refusal(err.LIMIT)
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


__all__ = ["Dispatcher", "DispatchLimits", "ExtraMethod", "bind_params", "error_response",
           "parse_json"]
