"""``/daimon/infer/1`` between two libp2p nodes: stream reuse, the warm session, and attacks.

A peer that sends an oversize or malformed request is refused and penalised like on
sync and content (``WEIGHT_PROTOCOL`` per frame), and the runner serves on.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import trio
from libp2p.network.stream.exceptions import StreamError
from libp2p.peer.id import ID

from chain.crypto import KeyPair
from chain.records import Channel
from chain.types import InputSpec
from daimon_node.market.messages import Inference, InferRequest, Quote, QuoteRequest, npy_bytes
from daimon_node.market.service import InferService, Served
from daimon_node.market.vouchers import VoucherBook, make_voucher
from daimon_node.market.wire import INFER_LIMITS, INFER_PROTOCOL, InferCodec
from daimon_node.proofs.sandbox import Sandbox
from p2p import P2PNode, ProtocolViolation
from p2p.framing import _LEN, encode_frame, pack, read_bytes_frame
from p2p.peers import WEIGHT_PROTOCOL

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "p2p"))
from p2p_helpers import link, running_nodes  # noqa: E402

from test_market import F, C, model_bytes  # noqa: E402

CHAIN = b"\x33" * 32
PRICE = 2
USER, RUNNER = KeyPair.from_label("net-user"), KeyPair.from_label("net-runner")
SPEC = InputSpec((F,), "float32", 0, 16, 1)


@pytest.fixture(scope="module")
def sandbox():  # type: ignore[no-untyped-def]
    sb = Sandbox()
    yield sb
    sb.close()


def runner_service(sandbox: Sandbox) -> InferService:
    service = InferService(RUNNER.address_bytes, VoucherBook(None), sandbox,
                           lambda chain, payer: Channel(10**6, 0, 100, 0), lambda chain: 1)
    params = SimpleNamespace(input_spec=SPEC, num_classes=C, max_model_bytes=10**7, max_infer_ms=30_000)
    model = model_bytes(7)
    service.served[CHAIN] = Served(CHAIN, params, hashlib.sha256(model).digest(), model, PRICE)  # type: ignore[arg-type]
    return service


def serve(node: P2PNode, service: InferService) -> None:
    node.request_response(INFER_PROTOCOL, InferCodec(), INFER_LIMITS).serve(service.handle)


async def raw_exchange(client: P2PNode, server: P2PNode, data: bytes) -> bytes:
    """Write ``data`` on a fresh raw stream, read one frame; b"" when the server resets."""
    stream = await client.hosting.host.new_stream(ID.from_base58(server.peer_id), [INFER_PROTOCOL])
    try:
        await stream.write(data)
        return await read_bytes_frame(stream, INFER_LIMITS.max_response_bytes)
    except (StreamError, ProtocolViolation):
        return b""


def penalty_of(node: P2PNode, peer: str) -> float:
    return {s.peer_id: s for s in node.peers()}[peer].penalty


async def test_paid_calls_reuse_one_stream_and_one_warm_session(tmp_path: Path, sandbox: Sandbox) -> None:
    service = runner_service(sandbox)
    loaded_before = sandbox.sessions_loaded
    x = np.random.default_rng(0).uniform(0, 16, (3, F)).astype(np.float32)
    async with running_nodes(tmp_path, 2) as (runner, user):
        serve(runner, service)
        await link(user, runner)
        opened = [0]
        original = user.hosting.host.new_stream

        async def counting(*args, **kwargs):  # type: ignore[no-untyped-def]
            opened[0] += 1
            return await original(*args, **kwargs)

        user.hosting.host.new_stream = counting  # type: ignore[method-assign]
        client = user.request_response(INFER_PROTOCOL, InferCodec(), INFER_LIMITS)
        with trio.fail_after(60):
            quote = await client.request(runner.peer_id, QuoteRequest(CHAIN, USER.address_bytes))
            assert isinstance(quote, Quote) and quote.price == PRICE
            for k in range(1, 4):
                voucher = make_voucher(USER, CHAIN, RUNNER.address_bytes, 0, k * PRICE * len(x))
                reply = await client.request(runner.peer_id, InferRequest(CHAIN, voucher, npy_bytes(x)))
                assert isinstance(reply, Inference) and reply.cumulative == k * PRICE * len(x)
    assert opened[0] == 1  # four exchanges, one stream
    assert sandbox.sessions_loaded == loaded_before + 1  # three calls, one session built
    assert service.calls == 3 and service.items == 3 * len(x)


async def test_oversize_infer_request_is_refused_and_penalised(tmp_path: Path, sandbox: Sandbox) -> None:
    async with running_nodes(tmp_path, 3) as (runner, attacker, user):
        serve(runner, runner_service(sandbox))
        await link(attacker, runner)
        await link(user, runner)
        with trio.fail_after(30):
            oversize = _LEN.pack(INFER_LIMITS.max_request_bytes + 1) + b"\0" * 1024
            assert await raw_exchange(attacker, runner, oversize) == b""
        assert penalty_of(runner, attacker.peer_id) >= WEIGHT_PROTOCOL * 0.99  # decays for a moment at most
        client = user.request_response(INFER_PROTOCOL, InferCodec(), INFER_LIMITS)
        with trio.fail_after(30):  # the runner serves on
            assert isinstance(await client.request(runner.peer_id, QuoteRequest(CHAIN, USER.address_bytes)), Quote)


@pytest.mark.parametrize("frame", [
    pack(["bogus"]),
    pack(["infer", CHAIN, b"not a voucher", b""]),
    pack(["quote", CHAIN[:5], USER.address_bytes]),
    b"\xc1 not msgpack",
], ids=["unknown_op", "undecodable_voucher", "short_chain_id", "not_msgpack"])
async def test_malformed_infer_request_is_refused_and_penalised(tmp_path: Path, sandbox: Sandbox, frame: bytes) -> None:
    async with running_nodes(tmp_path, 2) as (runner, attacker):
        service = runner_service(sandbox)
        serve(runner, service)
        await link(attacker, runner)
        with trio.fail_after(30):
            assert await raw_exchange(attacker, runner, encode_frame(frame)) == b""
        assert penalty_of(runner, attacker.peer_id) >= WEIGHT_PROTOCOL * 0.99
        assert service.calls == 0 and not service.refused  # the service never saw it
