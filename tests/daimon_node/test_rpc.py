"""The JSON-RPC dispatcher without sockets: JSON-RPC 2.0 rules, validation, typed errors, metrics.

The backend is the node's own (``NodeBackend``) over a devnet chain in LevelDB (``rpcnode``).
"""

from __future__ import annotations

import inspect
import json
import logging
from typing import Any, Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from chain.devnet import Devnet, DevnetConfig
from chain.payloads import RegisterValidator
from daimon_node.daemon.backend import NodeBackend
from daimon_node.rpc import errors as E
from daimon_node.rpc.api import METHODS, RpcBackend, rpc_method_name
from daimon_node.rpc.dispatcher import Dispatcher, DispatchLimits
from daimon_node.harness.devnet_node import devnet_backend

DEVNET = Devnet(DevnetConfig(m=50))
DEVNET.start()
DEVNET.commit()
CHAIN = "0x" + DEVNET.chain_id.hex()
ADDR = "0x" + DEVNET.validator_keys[0].address_bytes.hex()


class FailingBackend(NodeBackend):
    """The node's backend, with two bugs planted: ``peer_count`` raises; ``syncing`` returns
    something JSON cannot encode."""

    async def peer_count(self) -> int:
        raise RuntimeError("secret internal detail")

    async def syncing(self) -> Any:
        return {b"bytes": object()}


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FailingBackend]:
    node_backend = devnet_backend(tmp_path_factory.mktemp("node"), DEVNET, FailingBackend)
    yield node_backend
    node_backend.api.chains.close()


def make(backend: NodeBackend, limits: DispatchLimits = DispatchLimits()) -> Dispatcher:
    return Dispatcher(backend, limits=limits)


async def call(d: Dispatcher, payload: Any) -> Any:
    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    reply = await d.handle(raw)
    return None if reply is None else json.loads(reply)


def req(method: str, params: Any = None, id_: Any = 1) -> dict[str, Any]:
    msg: dict[str, Any] = {"jsonrpc": "2.0", "id": id_, "method": method}
    if params is not None:
        msg["params"] = params
    return msg


def error_code(reply: Any) -> int:
    return int(reply["error"]["code"])


# --- method table ---------------------------------------------------------------------
def test_method_names_are_camel_case_of_backend_methods() -> None:
    assert rpc_method_name("block_number") == "daimon_blockNumber"
    assert rpc_method_name("send_raw_transaction") == "daimon_sendRawTransaction"
    protocol_methods = {n for n, _ in inspect.getmembers(RpcBackend, inspect.iscoroutinefunction)
                        if not n.startswith("_")}
    assert protocol_methods == {spec.backend_name for spec in METHODS.values()}
    for spec in METHODS.values():  # params in the table match the Protocol's signature
        sig = inspect.signature(getattr(RpcBackend, spec.backend_name))
        assert [p for p in sig.parameters if p != "self"] == [p.name for p in spec.params]


def test_node_backend_implements_the_protocol(backend: FailingBackend) -> None:
    assert isinstance(backend, RpcBackend)


# --- success ------------------------------------------------------------------------
async def test_positional_and_named_params(backend: FailingBackend) -> None:
    d = make(backend)
    assert (await call(d, req("daimon_blockNumber", [CHAIN])))["result"] == 1
    assert (await call(d, req("daimon_blockNumber", {"chain": CHAIN})))["result"] == 1
    reply = await call(d, req("daimon_getBalance", {"address": ADDR, "chain": CHAIN}, id_="abc"))
    assert reply == {"jsonrpc": "2.0", "id": "abc",
                     "result": {"spendable": str(DEVNET.balance(DEVNET.validator_keys[0])[0]), "locked": "0"}}


async def test_amounts_are_decimal_strings_beyond_2_53(backend: FailingBackend) -> None:
    problem = (await call(make(backend), req("daimon_getProblem", [CHAIN])))["result"]
    amount = problem["params"]["genesis"][0]["amount"]
    assert amount == str(DEVNET.cfg.genesis_amount) and int(amount) > 2**53


async def test_notification_gets_no_response_but_runs(backend: FailingBackend) -> None:
    d = make(backend)
    tx = DEVNET.tx(DEVNET.improver_keys[3], RegisterValidator())
    assert await d.handle(json.dumps({"jsonrpc": "2.0", "method": "daimon_sendRawTransaction",
                                      "params": [CHAIN, "0x" + tx.encode().hex()]}).encode()) is None
    assert tx.hash in backend.api.chains.chains[DEVNET.chain_id].mempool.txs


# --- standard error codes -----------------------------------------------------------------
@pytest.mark.parametrize("body", [b"{", b"not json", b"\xff\xfe", b"[" * 100_000])
async def test_parse_error(backend: FailingBackend, body: bytes) -> None:
    reply = await call(make(backend), body)
    assert error_code(reply) == E.PARSE_ERROR and reply["id"] is None


@pytest.mark.parametrize("payload", [
    1, "x", None, {"id": 1, "method": "daimon_peerCount"},  # no jsonrpc
    {"jsonrpc": "1.0", "id": 1, "method": "daimon_peerCount"},
    {"jsonrpc": "2.0", "id": 1, "method": 5},
    {"jsonrpc": "2.0", "id": 1, "method": "daimon_peerCount", "params": 3},
    {"jsonrpc": "2.0", "id": [1], "method": "daimon_peerCount"},  # id must be scalar
])
async def test_invalid_request(backend: FailingBackend, payload: Any) -> None:
    assert error_code(await call(make(backend), payload)) == E.INVALID_REQUEST


async def test_method_not_found(backend: FailingBackend) -> None:
    d = make(backend)
    reply = await call(d, req("daimon_noSuchThing"))
    assert error_code(reply) == E.METHOD_NOT_FOUND and reply["id"] == 1
    assert error_code(await call(d, req("eth_blockNumber"))) == E.METHOD_NOT_FOUND
    reply = await call(d, req("daimon_subscribe", ["newHeads", CHAIN]))
    assert error_code(reply) == E.METHOD_NOT_FOUND and "WebSocket" in reply["error"]["message"]


@pytest.mark.parametrize("method,params,fragment", [
    ("daimon_blockNumber", [], "takes 1 params"),
    ("daimon_blockNumber", [CHAIN, 1], "takes 1 params"),
    ("daimon_blockNumber", ["0x1234"], "expected 32 bytes"),
    ("daimon_blockNumber", [CHAIN[2:]], "0x-prefixed"),  # no 0x
    ("daimon_blockNumber", [CHAIN + "0"], "0x-prefixed"),  # odd length
    ("daimon_blockNumber", ["0x" + "zz" * 32], "0x-prefixed"),  # not hex
    ("daimon_blockNumber", [7], "got number"),
    ("daimon_getBlockByNumber", [CHAIN, -1], "outside"),
    ("daimon_getBlockByNumber", [CHAIN, 2**64], "outside"),
    ("daimon_getBlockByNumber", [CHAIN, True], "got boolean"),
    ("daimon_getBlockByNumber", [CHAIN, 1.5], "got number"),
    ("daimon_getBlockByNumber", [CHAIN, "1"], "got string"),
    ("daimon_getBalance", [CHAIN, "0x" + "00" * 32], "expected 20 bytes"),
    ("daimon_getBalance", {"chain": CHAIN}, "missing params ['address']"),
    ("daimon_getBalance", {"chain": CHAIN, "address": ADDR, "extra": 1}, "unknown params ['extra']"),
])
async def test_invalid_params(backend: FailingBackend, method: str, params: Any, fragment: str) -> None:
    reply = await call(make(backend), req(method, params))
    assert error_code(reply) == E.INVALID_PARAMS
    assert fragment in reply["error"]["message"]


async def test_internal_error_hides_details_and_is_logged(backend: FailingBackend, caplog: pytest.LogCaptureFixture) -> None:
    d = make(backend)
    with caplog.at_level(logging.ERROR, logger="daimon.rpc"):
        reply = await call(d, req("daimon_peerCount"))
    assert reply["error"] == {"code": E.INTERNAL_ERROR, "message": "internal error"}
    assert "secret" not in json.dumps(reply)
    assert "secret internal detail" in caplog.text
    assert error_code(await call(d, req("daimon_syncing"))) == E.INTERNAL_ERROR  # unserialisable result
    assert (await call(d, req("daimon_blockNumber", [CHAIN])))["result"] == 1  # still serving


async def test_server_defined_codes(backend: FailingBackend) -> None:
    d = make(backend)
    reply = await call(d, req("daimon_blockNumber", ["0x" + "ab" * 32]))
    assert error_code(reply) == E.NOT_FOUND and "unknown chain" in reply["error"]["message"]
    reply = await call(d, req("daimon_submitProof", [CHAIN, "0xdeadbeef"]))
    assert error_code(reply) == E.REJECTED
    assert reply["error"]["data"]["reason"].startswith("malformed PoI")


# --- batches ------------------------------------------------------------------------------
async def test_batch_mixed_keeps_ids_and_skips_notifications(backend: FailingBackend) -> None:
    replies = await call(make(backend), [
        req("daimon_blockNumber", [CHAIN], id_=1),
        {"jsonrpc": "2.0", "method": "daimon_blockNumber", "params": [CHAIN]},  # notification
        req("daimon_nope", id_=2),
        7,
        req("daimon_getBlockByNumber", [CHAIN, 99], id_=3),
    ])
    assert [r["id"] for r in replies] == [1, 2, None, 3]
    assert replies[0]["result"] == 1
    assert error_code(replies[1]) == E.METHOD_NOT_FOUND
    assert error_code(replies[2]) == E.INVALID_REQUEST
    assert replies[3] == {"jsonrpc": "2.0", "id": 3, "result": None}  # missing block: null


async def test_empty_batch_is_one_invalid_request(backend: FailingBackend) -> None:
    reply = await call(make(backend), [])
    assert isinstance(reply, dict) and error_code(reply) == E.INVALID_REQUEST


async def test_all_notification_batch_has_no_response(backend: FailingBackend) -> None:
    note = {"jsonrpc": "2.0", "method": "daimon_blockNumber", "params": [CHAIN]}
    assert await call(make(backend), [note, note]) is None


async def test_batch_and_request_size_caps(backend: FailingBackend) -> None:
    d = make(backend, DispatchLimits(max_request_bytes=2000, max_batch=3))
    reply = await call(d, [req("daimon_blockNumber", [CHAIN], id_=i) for i in range(4)])
    assert isinstance(reply, dict) and error_code(reply) == E.INVALID_REQUEST
    assert "limit of 3" in reply["error"]["message"]
    assert len(await call(d, [req("daimon_blockNumber", [CHAIN], id_=i) for i in range(3)])) == 3
    reply = await call(d, req("daimon_submitProof", [CHAIN, "0x" + "00" * 1000]))
    assert error_code(reply) == E.INVALID_REQUEST and "exceeds the limit" in reply["error"]["message"]


# --- bodies the fuzz found (issue 13) ----------------------------------------------------------
@pytest.mark.parametrize("body,code", [
    (b'{"jsonrpc":"2.0","id":NaN,"method":"daimon_listProblems"}', E.PARSE_ERROR),  # NaN is not JSON
    (b'{"jsonrpc":"2.0","id":-Infinity,"method":"daimon_listProblems"}', E.PARSE_ERROR),
    (b'{"jsonrpc":"2.0","id":1e400,"method":"daimon_listProblems"}', E.INVALID_REQUEST),  # parses to inf
])
async def test_an_id_json_cannot_write_is_refused_not_dropped(backend: FailingBackend, body: bytes, code: int) -> None:
    reply = await call(make(backend), body)  # used to raise out of the dispatcher: the connection dropped
    assert error_code(reply) == code and reply["id"] is None


async def test_lone_surrogates_are_echoed_escaped(backend: FailingBackend) -> None:
    d = make(backend)
    reply = await d.handle(b'{"jsonrpc":"2.0","id":"\\ud800","method":"daimon_blockNumber","params":["%s"]}'
                           % CHAIN.encode())
    assert reply is not None and reply.isascii() and json.loads(reply) == {"jsonrpc": "2.0", "id": "\ud800",
                                                                         "result": 1}
    reply = await d.handle(b'{"jsonrpc":"2.0","id":1,"method":"daimon_\\udfff"}')
    assert reply is not None and error_code(json.loads(reply)) == E.METHOD_NOT_FOUND


def refused(d: Dispatcher, limit: str) -> float:
    for family in text_string_to_metric_families(d.metrics.render().decode()):
        for sample in family.samples:
            if sample.name == "daimon_rpc_refused_total" and sample.labels == {"limit": limit}:
                return sample.value
    return 0.0


@pytest.mark.parametrize("body,error,limit", [
    (b"[" * 100_000 + b"]" * 100_000, E.NestingTooDeep, "nesting"),
    (b'{"a":' * 100_000 + b"1" + b"}" * 100_000, E.NestingTooDeep, "nesting"),
    (b'{"jsonrpc":"2.0","id":' + b"9" * 5000 + b',"method":"daimon_peerCount"}', E.NumberTooLarge, "number"),
    (b"[" + b"-" + b"1" * 4301 + b"]", E.NumberTooLarge, "number"),
    (json.dumps([req("daimon_peerCount", id_=i) for i in range(10_000)]).encode(), E.BatchTooLarge, "batch"),
])
async def test_limits_are_typed_errors_and_counted(backend: FailingBackend, body: bytes, error: type[E.LimitExceeded], limit: str) -> None:
    d = make(backend)
    reply = await call(d, body)
    assert error_code(reply) == error.CODE and reply["id"] is None
    assert reply["error"]["data"]["limit"] == limit == error.LIMIT
    assert refused(d, limit) == 1
    assert type(E.error_from_json(reply["error"])) in (E.ParseError, E.InvalidRequest)


async def test_an_integer_under_the_conversion_limit_is_only_out_of_range(backend: FailingBackend) -> None:
    reply = await call(make(backend), b'{"jsonrpc":"2.0","id":1,"method":"daimon_getBlockByNumber","params":["%s",%s]}'
                       % (CHAIN.encode(), b"9" * 4000))
    assert error_code(reply) == E.INVALID_PARAMS and len(reply["error"]["message"]) < 200


# --- metrics ----------------------------------------------------------------------------
async def test_counters_and_latency_histogram(backend: FailingBackend) -> None:
    d = make(backend)
    for _ in range(3):
        await call(d, req("daimon_blockNumber", [CHAIN]))
    await call(d, req("daimon_nope"))
    await call(d, b"{")
    families = {f.name: f for f in text_string_to_metric_families(d.metrics.render().decode())}
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in families.values() for s in f.samples}
    assert samples[("daimon_rpc_requests_total", (("method", "daimon_blockNumber"),))] == 3
    assert samples[("daimon_rpc_requests_total", (("method", "unknown"),))] == 1
    assert samples[("daimon_rpc_errors_total", (("code", "-32601"),))] == 1
    assert samples[("daimon_rpc_errors_total", (("code", "-32700"),))] == 1
    assert samples[("daimon_rpc_request_duration_seconds_count", (("method", "daimon_blockNumber"),))] == 3
    assert samples[("daimon_rpc_request_duration_seconds_bucket",
                    (("le", "+Inf"), ("method", "daimon_blockNumber")))] == 3


def test_registry_get_or_create_and_conflicts(backend: FailingBackend) -> None:
    d = make(backend)
    g = d.metrics.gauge("daimon_height", "head height", ["chain"])
    assert d.metrics.gauge("daimon_height", "head height", ["chain"]) is g
    with pytest.raises(ValueError):
        d.metrics.counter("daimon_height")


def test_error_from_json_round_trips_typed_errors() -> None:
    for err in (E.NotFound("x"), E.InvalidParams("y"), E.Rejected("bad nonce"), E.ParseError("z")):
        back = E.error_from_json(json.loads(json.dumps(err.to_json())))
        assert type(back) is type(err) and back.code == err.code and back.message == err.message
    assert E.error_from_json({"code": 12, "message": "m"}).code == 12
    assert isinstance(E.error_from_json("junk"), E.InternalError)


def test_rejected_carries_the_broken_rule_through_json() -> None:
    """A client tells refusals apart by ``rule`` (a chain rule's class or a runner's code), never by text."""
    from daimon_node.rpc.errors import Rejected, error_from_json

    sent = Rejected("transaction rejected: tx_FeeTooLow", rule="FeeTooLow")
    back = error_from_json({"code": sent.code, "message": str(sent), "data": sent.data})
    assert isinstance(back, Rejected) and back.rule == "FeeTooLow" and back.reason == sent.reason
    plain = error_from_json({"code": sent.code, "message": "x", "data": {"reason": "nonce too low"}})
    assert isinstance(plain, Rejected) and plain.rule is None
