"""Typed JSON-RPC errors: the one place where an exception class meets its wire code.

The backend raises these (``NotFound``, ``Rejected``, ``InvalidParams``...) and the
dispatcher turns them into JSON-RPC error objects; the client turns error objects
back into the same classes, so ``except NotFound`` works on both sides of the wire.
Every other exception a backend raises is a bug: the dispatcher logs it and
answers -32603 without leaking a traceback.
"""

from __future__ import annotations

from typing import Any, ClassVar, Final

from daimon_node.errors import DaimonError

# --- JSON-RPC 2.0 standard codes -------------------------------------------------
PARSE_ERROR: Final[int] = -32700  # body is not JSON
INVALID_REQUEST: Final[int] = -32600  # JSON, but not a request object (or batch too large)
METHOD_NOT_FOUND: Final[int] = -32601
INVALID_PARAMS: Final[int] = -32602
INTERNAL_ERROR: Final[int] = -32603  # unexpected exception in the node

# --- Server-defined codes (-32000..-32099) -----------------------------------------
NOT_FOUND: Final[int] = -32001  # unknown chain, account, block or subscription
REJECTED: Final[int] = -32002  # the node refuses a transaction, proof, vote or reveal
UNAVAILABLE: Final[int] = -32003  # the node cannot answer now (starting, syncing)


class RpcError(DaimonError):
    """A JSON-RPC error: ``code``, a one-line ``message`` and optional JSON ``data``."""

    CODE: ClassVar[int] = INTERNAL_ERROR

    def __init__(self, message: str, *, code: int | None = None, data: Any = None) -> None:
        super().__init__(message)
        self.code: int = self.CODE if code is None else code
        self.message: str = message
        self.data: Any = data

    def __str__(self) -> str:
        return f"{self.message} (code {self.code})"

    def to_json(self) -> dict[str, Any]:
        """The ``error`` member of a JSON-RPC response."""
        err: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            err["data"] = self.data
        return err


class ParseError(RpcError):
    """The request body is not valid JSON (or not UTF-8)."""

    CODE = PARSE_ERROR


class InvalidRequest(RpcError):
    """Valid JSON that is not a JSON-RPC 2.0 request, or a batch over the size cap."""

    CODE = INVALID_REQUEST


class MethodNotFound(RpcError):
    """No such method in the ``daimon_`` namespace (or not on this transport)."""

    CODE = METHOD_NOT_FOUND


class InvalidParams(RpcError):
    """Wrong number, names, types or shapes of params; raised before the backend runs."""

    CODE = INVALID_PARAMS


class InternalError(RpcError):
    """The node failed unexpectedly; details are in the node's log, not on the wire."""

    CODE = INTERNAL_ERROR


class NotFound(RpcError):
    """The chain, block, account or subscription asked for does not exist."""

    CODE = NOT_FOUND


class Rejected(RpcError):
    """The node refuses a submitted transaction, proof, vote or reveal; ``reason`` says why.

    ``rule``, when known, names what was broken in a form a program can test: a chain rule's
    error class (``FeeTooLow``, ``ModelNotClaimed``...) or a runner's refusal code
    (``run_failed``, ``bad_input``...). It travels in the error's ``data``, so a client never
    has to search the message.
    """

    CODE = REJECTED

    def __init__(self, reason: str, *, rule: str | None = None, code: int | None = None, data: Any = None) -> None:
        if data is None:
            data = {"reason": reason} if rule is None else {"reason": reason, "rule": rule}
        super().__init__(f"rejected: {reason}", code=code, data=data)
        self.reason: str = reason
        self.rule: str | None = rule


class LimitExceeded(RpcError):
    """A request the server will not process because it is over one of the server's limits.

    ``LIMIT`` names the limit (the ``limit`` label of ``daimon_rpc_refused_total``); ``value``
    is what the request had, when known, and ``cap`` the most the server takes. All three go
    to the client as the error's ``data``, so a client can tell which limit it hit. Each
    subclass also derives from the standard error whose code it answers with: limits met
    while parsing are parse errors (-32700), limits on the request's shape invalid requests
    (-32600).
    """

    LIMIT: ClassVar[str] = ""

    def __init__(self, message: str, *, value: int | None, cap: int) -> None:
        super().__init__(message, data={"limit": self.LIMIT, "value": value, "cap": cap})
        self.value: int | None = value
        self.cap: int = cap


class RequestTooLarge(LimitExceeded, InvalidRequest):
    """A body (HTTP, where it is answered 413) or WebSocket message over ``max_request_bytes``."""

    LIMIT = "request_bytes"


class BatchTooLarge(LimitExceeded, InvalidRequest):
    """A batch of more than ``max_batch`` requests."""

    LIMIT = "batch"


class NestingTooDeep(LimitExceeded, ParseError):
    """Arrays or objects nested deeper than the parser's recursion limit."""

    LIMIT = "nesting"


class NumberTooLarge(LimitExceeded, ParseError):
    """An integer of more digits than Python converts (``sys.get_int_max_str_digits()``, 4,300)."""

    LIMIT = "number"


class Unavailable(RpcError):
    """The node cannot answer this now (still starting, or syncing the chain asked for)."""

    CODE = UNAVAILABLE


_BY_CODE: Final[dict[int, type[RpcError]]] = {
    cls.CODE: cls
    for cls in (ParseError, InvalidRequest, MethodNotFound, InvalidParams, InternalError, NotFound, Unavailable)
}


def error_from_json(err: Any) -> RpcError:
    """Rebuild the typed error from a JSON-RPC ``error`` object (used by the client)."""
    if not isinstance(err, dict) or not isinstance(err.get("code"), int):
        return InternalError(f"malformed error object from server: {err!r:.200}")
    code, message, data = err["code"], str(err.get("message", "")), err.get("data")
    if code == REJECTED:
        reason = data.get("reason") if isinstance(data, dict) else None
        rule = data.get("rule") if isinstance(data, dict) else None
        return Rejected(str(reason) if reason is not None else message,
                        rule=str(rule) if rule is not None else None, data=data)
    cls = _BY_CODE.get(code, RpcError)
    return cls(message, code=code, data=data)


__all__ = [
    "PARSE_ERROR", "INVALID_REQUEST", "METHOD_NOT_FOUND", "INVALID_PARAMS", "INTERNAL_ERROR",
    "NOT_FOUND", "REJECTED", "UNAVAILABLE",
    "RpcError", "ParseError", "InvalidRequest", "MethodNotFound", "InvalidParams", "InternalError",
    "NotFound", "Rejected", "Unavailable", "LimitExceeded", "RequestTooLarge", "BatchTooLarge",
    "NestingTooDeep", "NumberTooLarge", "error_from_json",
]
