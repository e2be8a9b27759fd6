"""Helpers shared by the tests that run node processes: bounded waits and tolerant RPC calls."""

from __future__ import annotations

import time
from typing import Any, Callable

from daimon_node.rpc.client import RpcClient
from daimon_node.errors import DaimonError
from daimon_node.harness.testnet import free_base_port  # noqa: F401  (the tests' import point)


def wait_for(what: str, predicate: Callable[[], Any], timeout: float, poll: float = 1.0) -> Any:
    """Poll ``predicate`` until it returns something truthy (returned), or fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def rpc(port: int) -> RpcClient:
    return RpcClient(f"http://127.0.0.1:{port}", timeout=5.0)


def try_call(port: int, fn: Callable[[RpcClient], Any]) -> Any:
    """``fn(client)``, or None while the node is down or refuses (the caller polls again)."""
    try:
        with rpc(port) as client:
            return fn(client)
    except (DaimonError, OSError):
        return None
