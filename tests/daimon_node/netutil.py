"""Helpers shared by the tests that run node processes: bounded waits and tolerant RPC calls."""

from __future__ import annotations

import random
import socket
import time
from typing import Any, Callable

from daimon_node.client import RpcClient
from daimon_node.errors import DaimonError


def free_base_port(nodes: int = 4) -> int:
    """A base port whose p2p (base + i) and RPC (base + 100 + i) ports for ``nodes`` nodes are free now.

    Random, so two test runs (or two tests in one run) do not reuse each other's ports.
    """
    for _ in range(100):
        base = random.randrange(20000, 60000, 200)
        ports = [base + i for i in range(nodes)] + [base + 100 + i for i in range(nodes)]
        socks = []
        try:
            for port in ports:
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free block of ports on 127.0.0.1")


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
