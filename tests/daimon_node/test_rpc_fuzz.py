"""RPC fuzz against a live node process (issue 13).

Hypothesis writes JSON-RPC bodies a hostile or broken client could send (wrong types, numbers
of 5,000 digits, ``NaN``, lone UTF-16 surrogates, invalid UTF-8, nesting 200,000 deep, batches of
10,000, non-objects, unknown methods, wrong param counts) and params for every method of the
dispatcher (right shapes with random values, near misses, mutated real encodings). They go to
node 0 of a 2-node testnet (separate OS processes, 127.0.0.1, free ports), over HTTP and over
the WebSocket. For every body the node must answer (never drop the connection) with a status
below 500 and strict JSON, and never with -32603 (internal error: a bug in the node). Afterwards
the process is alive, ``daimon_blockNumber`` and ``/health`` answer as before, ``/metrics``
counts every refusal the client saw, and the node logged no RPC error.

Hypothesis runs derandomized without an example database, so CI replays the same bodies.
"""

from __future__ import annotations

import http.client
import json
import socket
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chain.builder import make_transaction
from chain.payloads import Transfer
from daimon_node.rpc.api import METHODS, Hex, MethodSpec, UInt, hex0x
from daimon_node.rpc.dispatcher import WS_ONLY
from daimon_node.rpc.errors import (
    INTERNAL_ERROR,
    INVALID_PARAMS,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    NOT_FOUND,
    PARSE_ERROR,
    REJECTED,
    UNAVAILABLE,
)
from daimon_node.rpc.server import ServerConfig
from daimon_node.harness.testnet import Testnet, TestnetPlan, prepare_testnet
from netutil import free_base_port, try_call, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

T_P, T_B, GRACE, START_DELAY = 4, 4, 2, 2  # only the Problem block is needed: it lands at t0 + T_p
LIMITS = ServerConfig()
# A node answers these calls from memory in milliseconds; the bound is the server's own
# read_timeout three times over, so a slow box never fails the test but a hung node does.
CALL_TIMEOUT = 3 * LIMITS.read_timeout
KNOWN_CODES = {PARSE_ERROR, INVALID_REQUEST, METHOD_NOT_FOUND, INVALID_PARAMS, NOT_FOUND, REJECTED, UNAVAILABLE}
RPC_LOGGERS = ("daimon.rpc:", "daimon.rpc.server:")

# Examples per phase: every method gets METHOD_EXAMPLES generated param lists (x24 methods);
# about half bind (params_for's weights), so each method's backend code runs ~20 times. At a
# few ms per call the ~1,300 bodies take seconds; the module's time is mostly the testnet start.
METHOD_EXAMPLES = 40
BODY_EXAMPLES = 300
WS_EXAMPLES = 60


def fuzz_settings(examples: int) -> settings:
    return settings(max_examples=examples, deadline=None, derandomize=True, database=None, print_blob=False,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.filter_too_much, HealthCheck.large_base_example])


# --- writing JSON that json.dumps will not write ------------------------------------------
@dataclass(frozen=True)
class Raw:
    """A JSON token written verbatim: a 5,000-digit number, ``NaN``, a nest 200,000 deep."""

    text: str


def write(value: Any) -> str:
    """``value`` as JSON text; str leaves go out with ``\\u`` escapes, so lone surrogates survive."""
    if isinstance(value, Raw):
        return value.text
    if isinstance(value, list):
        return "[" + ",".join(write(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(json.dumps(k) + ":" + write(v) for k, v in value.items()) + "}"
    return json.dumps(value)  # floats nan/inf come out as NaN / Infinity, as a broken client writes them


def nest(depth: int, bracket: str) -> Raw:
    return Raw("[" * depth + "]" * depth if bracket == "[" else '{"a":' * depth + "1" + "}" * depth)


# Python refuses int <-> str beyond sys.get_int_max_str_digits() (4,300) digits; 1e400 overflows
# a double to infinity; 2^64 is one past the widest integer param.
INT_DIGITS = sys.get_int_max_str_digits()
HUGE_NUMBERS = st.one_of(
    st.integers(INT_DIGITS + 1, 5 * INT_DIGITS).map(lambda n: Raw("9" * n)),
    st.integers(INT_DIGITS + 1, 2 * INT_DIGITS).map(lambda n: Raw("-1" + "0" * n)),
    st.integers(21, INT_DIGITS).map(lambda n: Raw("9" * n)),
    st.sampled_from([Raw("1e400"), Raw("-1e400"), Raw("NaN"), Raw("Infinity"), Raw("-Infinity"),
                     Raw("1" * 400 + ".5"), Raw("18446744073709551616"), Raw("-0")]),
)
SURROGATES = st.sampled_from(["\ud800", "\udfff", "a\udc80b", "\udbff\udbff"])
# Around the interpreter's recursion limit (1,000) and far beyond it.
DEEP = st.tuples(st.one_of(st.integers(2, 200_000), st.sampled_from([900, 990, 1000, 1010, 100_000])),
                 st.sampled_from("[{")).map(lambda t: nest(*t))
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=40), SURROGATES,
                    HUGE_NUMBERS)
JSON_VALUES = st.recursive(SCALARS, lambda kids: st.one_of(st.lists(kids, max_size=5),
                                                           st.dictionaries(st.text(max_size=8), kids, max_size=5)),
                           max_leaves=20)
ALL_METHODS = sorted(METHODS) + sorted(WS_ONLY)
METHOD_NAMES = st.one_of(st.sampled_from(ALL_METHODS), st.text(max_size=30), SURROGATES, JSON_VALUES)
IDS = st.one_of(st.integers(), st.text(max_size=20), st.none(), st.floats(), SURROGATES, HUGE_NUMBERS,
                JSON_VALUES)


def requests(params: st.SearchStrategy[Any] = JSON_VALUES | DEEP) -> st.SearchStrategy[dict[str, Any]]:
    """Request objects with any member missing or wrong; "2.0" and real methods drawn often."""
    return st.fixed_dictionaries({}, optional={
        "jsonrpc": st.one_of(st.just("2.0"), st.just("2.0"), JSON_VALUES),
        "id": IDS, "method": METHOD_NAMES, "params": params,
    })


def batch_of(n: int) -> list[dict[str, Any]]:
    return [{"jsonrpc": "2.0", "id": i, "method": "daimon_peerCount"} for i in range(n)]


BAD_UTF8 = st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80", b"\xc0\xaf", b"\x80"])


def with_bad_utf8(t: tuple[str, bytes, int]) -> bytes:
    text, bad, at = t
    data = text.encode()
    at %= len(data) + 1
    return data[:at] + bad + data[at:]


# Bodies up to the size cap: over it the node answers 413 before reading (phase 3 checks that), and
# a client still sending then meets a reset, which would read here as a dropped connection.
BODIES = st.one_of(
    requests().map(write).map(str.encode),
    st.lists(requests(), max_size=20).map(write).map(str.encode),
    JSON_VALUES.map(write).map(str.encode),
    DEEP.map(write).map(str.encode),
    # the batch cap, one over it, and the 10,000
    st.sampled_from([LIMITS.max_batch, LIMITS.max_batch + 1, 10_000]).map(batch_of).map(write).map(str.encode),
    st.binary(max_size=300),
    st.tuples(requests().map(write), BAD_UTF8, st.integers(0, 10**6)).map(with_bad_utf8),
    st.tuples(requests().map(write), st.sampled_from(["utf-16", "utf-32", "utf-16-be"]))
    .map(lambda t: t[0].encode(t[1])),
).filter(lambda body: len(body) <= LIMITS.max_request_bytes)


# --- params for the real methods ------------------------------------------------------------
@dataclass
class Known:
    """Real values of the running testnet, so generated params reach past 'unknown chain'."""

    chain: bytes
    addresses: list[bytes]
    encodings: list[bytes]  # signed transactions the node would accept


def near_miss_hex(size: int | None) -> st.SearchStrategy[Any]:
    """Strings one step from valid hex: no prefix, odd length, wrong size, non-hex digits."""
    n = size if size is not None else 8
    good = st.binary(min_size=n, max_size=n).map(lambda b: b.hex())
    return st.one_of(
        good,  # no 0x
        good.map(lambda h: "0X" + h),
        good.map(lambda h: "0x" + h[1:]),  # odd length
        good.map(lambda h: "0x" + h + "00") if size is not None else good.map(lambda h: "0x" + h + "0"),
        good.map(lambda h: "0x" + h[:-2]) if size is not None else st.just("0xg0"),
        good.map(lambda h: "0x" + h.replace(h[:1] or "0", "z", 1)),
        st.just("0x"), st.just(""), st.just("0x" + "00" * 100_000),
    )


def value_for(kind: Hex | UInt, known: Known, name: str) -> st.SearchStrategy[Any]:
    """Mostly a well-typed value (a real one when the testnet has it), else a near miss or any JSON."""
    if isinstance(kind, UInt):
        good = st.one_of(st.integers(0, kind.high), st.sampled_from([0, 1, 2, kind.high, kind.high // 2]))
        bad = st.one_of(st.integers(max_value=-1), st.integers(min_value=kind.high + 1), st.floats(),
                        st.booleans(), st.integers(0, 99).map(str), HUGE_NUMBERS)
    elif kind.size is None:
        good = st.one_of(
            st.binary(max_size=2000).map(hex0x),
            st.sampled_from(known.encodings).map(hex0x),
            st.tuples(st.sampled_from(known.encodings), st.integers(0, 10**6), st.integers(1, 255))
            .map(lambda t: hex0x(flip(*t))),
            st.tuples(st.sampled_from(known.encodings), st.integers(0, 10**6))
            .map(lambda t: hex0x(t[0][: t[1] % len(t[0])])),
            msgpack_values().map(lambda v: hex0x(msgpack.packb(v))),
        )
        bad = near_miss_hex(None)
    else:
        real = [known.chain] if name in ("chain", "block_hash", "content_id") else known.addresses
        good = st.one_of(st.sampled_from(real).map(hex0x),
                         st.binary(min_size=kind.size, max_size=kind.size).map(hex0x))
        bad = near_miss_hex(kind.size)
    return weighted([(7, good), (2, bad), (1, JSON_VALUES)])


def weighted(choices: list[tuple[int, st.SearchStrategy[Any]]]) -> st.SearchStrategy[Any]:
    """One of ``choices``, each drawn about ``weight / total`` of the time (``one_of`` draws evenly)."""
    slots = [strategy for weight, strategy in choices for _ in range(weight)]
    return st.integers(0, len(slots) - 1).flatmap(lambda i: slots[i])


def flip(data: bytes, at: int, mask: int) -> bytes:
    at %= len(data)
    return data[:at] + bytes([data[at] ^ mask]) + data[at + 1:]


def msgpack_values() -> st.SearchStrategy[Any]:
    """msgpack the codec could mistake for an object: arrays of ints, bytes, nested arrays, maps."""
    leaves = st.one_of(st.integers(-(2**63), 2**64 - 1), st.binary(max_size=40), st.none(), st.booleans(),
                       st.floats(), st.text(max_size=10))
    return st.recursive(leaves, lambda kids: st.one_of(st.lists(kids, max_size=8),
                                                       st.dictionaries(st.text(max_size=4), kids, max_size=3)),
                        max_leaves=24)


def params_for(spec: MethodSpec, known: Known) -> st.SearchStrategy[Any]:
    """Mostly well-shaped params with generated values; also wrong counts, names and shapes."""
    values = [value_for(p.kind, known, p.name) for p in spec.params]
    names = [p.name for p in spec.params]
    positional = st.tuples(*values).map(list)
    named = st.tuples(*values).map(lambda vs: dict(zip(names, vs)))
    return weighted([
        (6, positional), (2, named),
        (1, st.tuples(positional, JSON_VALUES).map(lambda t: t[0] + [t[1]])),  # one too many
        (1, positional.map(lambda vs: vs[:-1])),  # one too few (or none)
        (1, st.tuples(named, st.text(max_size=8), JSON_VALUES).map(lambda t: {**t[0], t[1]: t[2]})),  # unknown name
        (1, named.map(lambda d: dict(list(d.items())[1:]))),  # a missing name
        (1, JSON_VALUES),
    ])


# --- talking to the node ---------------------------------------------------------------------
@dataclass
class Tally:
    """What the client saw refused; /metrics must count at least as much."""

    codes: Counter[int] = field(default_factory=Counter)
    limits: Counter[str] = field(default_factory=Counter)
    statuses: Counter[int] = field(default_factory=Counter)


def strict_json(payload: bytes) -> Any:
    def refuse(token: str) -> Any:
        raise AssertionError(f"reply holds the non-JSON token {token}")
    return json.loads(payload, parse_constant=refuse)  # bytes: must be valid UTF-8 (or BOM-marked)


def check_reply(body: bytes, status: int, payload: bytes, tally: Tally) -> list[dict[str, Any]]:
    """The node answered ``body`` as JSON-RPC must; returns the response objects."""
    tally.statuses[status] += 1
    where = f"body {body[:200]!r}... ({len(body)} bytes) -> {status} {payload[:300]!r}"
    assert status < 500, where
    assert status in (200, 204), where
    if status == 204:
        assert payload == b"", where
        return []
    reply = strict_json(payload)
    replies = reply if isinstance(reply, list) else [reply]
    assert replies and all(isinstance(r, dict) for r in replies), where
    for r in replies:
        assert r.get("jsonrpc") == "2.0" and ("result" in r) != ("error" in r), where
        if "error" in r:
            code = r["error"]["code"]
            assert code != INTERNAL_ERROR, f"internal error: {where}"
            assert code in KNOWN_CODES, where
            tally.codes[code] += 1
            data = r["error"].get("data")
            if code in (PARSE_ERROR, INVALID_REQUEST) and isinstance(data, dict) and "limit" in data:
                tally.limits[data["limit"]] += 1
    return replies


class Http:
    """One keep-alive HTTP connection; a node that drops it without an answer fails the test."""

    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=CALL_TIMEOUT)

    def request(self, method: str, path: str, body: bytes | None = None, **kw: Any) -> tuple[int, bytes]:
        try:
            self.conn.request(method, path, body=body, headers={"content-type": "application/json"}, **kw)
            reply = self.conn.getresponse()
            return reply.status, reply.read()
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError) as exc:
            self.conn.close()
            raise AssertionError(f"the node dropped the connection without answering "
                                 f"{body[:200] if body else b''!r} ({exc!r})") from None

    def post(self, body: bytes, tally: Tally) -> list[dict[str, Any]]:
        status, payload = self.request("POST", "/", body)
        return check_reply(body, status, payload, tally)

    def close(self) -> None:
        self.conn.close()


SENTINEL = b'{"jsonrpc":"2.0","id":"fuzz-sentinel","method":"daimon_peerCount"}'


class WebSocket:
    """A blocking WebSocket client on wsproto (as ``daimon_node.rpc.client.subscribe``), one reply per send."""

    def __init__(self, port: int) -> None:
        from wsproto import ConnectionType, WSConnection
        from wsproto.events import Request

        self.ws = WSConnection(ConnectionType.CLIENT)
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=CALL_TIMEOUT)
        self.sock.sendall(self.ws.send(Request(host=f"127.0.0.1:{port}", target="/ws")))
        self._next_event()  # AcceptConnection

    def _next_event(self) -> Any:
        from wsproto.events import CloseConnection, Ping

        while True:
            for event in self.ws.events():
                if isinstance(event, Ping):
                    self.sock.sendall(self.ws.send(event.response()))
                    continue
                if isinstance(event, CloseConnection):
                    raise AssertionError(f"the node closed the WebSocket: {event.code} {event.reason}")
                return event
            data = self.sock.recv(65536)
            if not data:
                raise AssertionError("the node dropped the WebSocket")
            self.ws.receive_data(data)

    def call(self, body: bytes, tally: Tally) -> None:
        """Send ``body``, then a sentinel request: what comes before the sentinel's reply answers ``body``
        (nothing, when ``body`` holds only notifications)."""
        from wsproto.events import BytesMessage, TextMessage

        self.sock.sendall(self.ws.send(BytesMessage(data=body)) + self.ws.send(BytesMessage(data=SENTINEL)))
        replies: list[bytes] = []
        parts: list[bytes] = []
        while True:
            event = self._next_event()
            assert isinstance(event, (TextMessage, BytesMessage)), event
            parts.append(event.data.encode() if isinstance(event, TextMessage) else bytes(event.data))
            if not event.message_finished:
                continue
            message, parts = b"".join(parts), []
            decoded = strict_json(message)
            if isinstance(decoded, dict) and decoded.get("id") == "fuzz-sentinel" and "result" in decoded:
                break
            replies.append(message)
        assert len(replies) <= 1, f"{len(replies)} replies to one message {body[:200]!r}"
        for message in replies:
            check_reply(body, 200, message, tally)

    def close(self) -> None:
        self.sock.close()


def exchange(port: int, data: bytes) -> bytes:
    """Send raw bytes, read until the node closes the connection (it does after a 413)."""
    with socket.create_connection(("127.0.0.1", port), timeout=CALL_TIMEOUT) as sock:
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def metrics(port: int) -> dict[str, float]:
    """/metrics as {'name{labels}': value}."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=CALL_TIMEOUT) as reply:
        text = reply.read().decode()
    return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
            for line in text.splitlines() if line and not line.startswith("#")}


def health(port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=CALL_TIMEOUT) as reply:
            return reply.status
    except urllib.error.HTTPError as err:
        return err.code


# --- the live node ---------------------------------------------------------------------------
@dataclass
class LiveNode:
    net: Testnet
    plan: TestnetPlan
    port: int
    known: Known
    log: Path


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveNode]:
    tmp = tmp_path_factory.mktemp("rpc_fuzz")
    plan = prepare_testnet(tmp / "net", 2, t_p=T_P, t_b=T_B, grace=GRACE, base_port=free_base_port(2),
                           start_delay=START_DELAY)
    keys = plan.keys
    encodings = [make_transaction(keys[0], plan.chain_id, n, Transfer(keys[1].address_bytes, 1 + n)).encode()
                 for n in range(3)]
    known = Known(plan.chain_id, [k.address_bytes for k in keys], encodings)
    net = Testnet(plan)
    net.start()
    try:
        port = plan.rpc_ports[0]
        # The Problem block lands at t0 + T_p = START_DELAY + T_P after prepare; two more periods
        # of slack for a loaded box, plus the node's own start (imports, libp2p) bounded by 60 s.
        wait_for("the Problem block on node 0",
                 lambda: (try_call(port, lambda c: c.block_number(plan.chain_id)) or -1) >= 0,
                 START_DELAY + T_P + 2 * T_B + 60, poll=0.5)
        yield LiveNode(net, plan, port, known, plan.directory / "node0" / "node.log")
    finally:
        net.stop()


def run_phase(examples: int, strategy: st.SearchStrategy[Any], send: Callable[[Any], None]) -> None:
    @fuzz_settings(examples)
    @given(strategy)
    def phase(value: Any) -> None:
        send(value)

    phase()


def test_fuzzed_bodies_never_break_the_node(node: LiveNode) -> None:
    port, known = node.port, node.known
    height_before = try_call(port, lambda c: c.block_number(known.chain))
    health_before = health(port)
    metrics_before = metrics(port)
    tally = Tally()
    started = time.monotonic()
    client = Http(port)
    try:
        # 1. Every method of the dispatcher, with generated params.
        # A reply other than a refusal of the request or its params means the backend ran.
        reached: Counter[str] = Counter()

        def call(name: str, params: Any) -> None:
            request = {"jsonrpc": "2.0", "id": 7, "method": name, "params": params}
            (reply,) = client.post(write(request).encode(), tally)
            code = reply.get("error", {}).get("code")
            # id null only where the body could not be read as a request (unparsable, over a limit)
            assert reply["id"] == 7 or (reply["id"] is None and code in (PARSE_ERROR, INVALID_REQUEST)), reply
            if code not in (PARSE_ERROR, INVALID_REQUEST, INVALID_PARAMS):
                reached[name] += 1

        for name in sorted(METHODS):
            run_phase(METHOD_EXAMPLES, params_for(METHODS[name], known), lambda params, name=name: call(name, params))
        assert not set(METHODS) - set(reached), f"never reached the backend: {set(METHODS) - set(reached)}"
        # 2. Whole bodies: anything at all.
        run_phase(BODY_EXAMPLES, BODIES, lambda body: client.post(body, tally))
        # 3. Over the size cap, by Content-Length and chunked: 413, never a 5xx.
        for head in (f"Content-Length: {LIMITS.max_request_bytes + 1}\r\n\r\n".encode(),
                     f"Transfer-Encoding: chunked\r\n\r\n{LIMITS.max_request_bytes + 1:x}\r\n".encode()
                     + b" " * (LIMITS.max_request_bytes + 1)):
            reply = exchange(port, b"POST / HTTP/1.1\r\nHost: fuzz\r\n" + head)
            assert reply.startswith(b"HTTP/1.1 413 "), reply[:200]
            tally.statuses[413] += 1
    finally:
        client.close()
    # 4. The WebSocket: the same dispatcher plus its own subscribe/unsubscribe.
    ws = WebSocket(port)
    try:
        ws_bodies = st.one_of(
            st.tuples(st.sampled_from(sorted(WS_ONLY)), JSON_VALUES | st.tuples(
                st.sampled_from(["newHeads", "proofs", "votes", "x"]),
                st.sampled_from([hex0x(known.chain), hex0x(bytes(32)), "0x"]) | JSON_VALUES).map(list))
            .map(lambda t: write({"jsonrpc": "2.0", "id": 1, "method": t[0], "params": t[1]}).encode()),
            BODIES,
        )
        run_phase(WS_EXAMPLES, ws_bodies, lambda body: ws.call(body, tally))
    finally:
        ws.close()
    elapsed = time.monotonic() - started

    # The node is alive and serves as before.
    assert node.net.alive() == [0, 1], "a node process died during the fuzz"
    height_after = try_call(port, lambda c: c.block_number(known.chain))
    assert height_before is not None and height_after is not None and height_after >= height_before
    assert health(port) == health_before
    # /metrics counts every refusal the client saw (notifications are counted but not answered).
    after = metrics(port)

    def grew(key: str) -> float:
        return after.get(key, 0.0) - metrics_before.get(key, 0.0)

    for code, seen in tally.codes.items():
        assert grew(f'daimon_rpc_errors_total{{code="{code}"}}') >= seen, (code, seen)
    for limit, seen in tally.limits.items():
        assert grew(f'daimon_rpc_refused_total{{limit="{limit}"}}') >= seen, (limit, seen)
    assert tally.statuses[413] == 2
    assert grew('daimon_rpc_http_responses_total{status="413"}') >= 2
    assert grew('daimon_rpc_refused_total{limit="request_bytes"}') >= 2
    for name in METHODS:  # every method ran at least once per generated example that reached it
        assert grew(f'daimon_rpc_requests_total{{method="{name}"}}') > 0, name
    # Each of the attacks was refused, with its typed error.
    for limit in ("batch", "nesting", "number"):
        assert tally.limits[limit] > 0, f"no body hit the {limit} limit: {tally.limits}"
    rpc_errors = [line for line in node.log.read_text(errors="replace").splitlines()
                  if " ERROR " in line and any(logger in line for logger in RPC_LOGGERS)]
    assert not rpc_errors, "\n".join(rpc_errors[:10])
    print(f"backend reached per method: {dict(reached)}")
    print(f"fuzz: {sum(tally.statuses.values())} bodies in {elapsed:.1f} s; codes {dict(tally.codes)}; "
          f"limits {dict(tally.limits)}; statuses {dict(tally.statuses)}")

