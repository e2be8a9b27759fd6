"""The runner's side of ``/daimon/infer/1`` and the user's offer choice (docs/market.md).

A paid call answers exactly what the model gives locally; every payment that would
let the user cheat (replayed, overspent, underpaid, forged, wrong epoch, no channel,
expiring channel) is refused before the model runs, and bad inputs take no payment.
"""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import numpy as np
import pytest
import trio
from onnx import TensorProto, helper, numpy_helper

from chain.crypto import KeyPair
from chain.records import Channel
from chain.types import InputSpec
from daimon_node.cli.market import StaleModel, pick_offer
from daimon_node.market.service import (
    InferError,
    InferService,
    Served,
    VoucherBook,
    check_inputs,
    make_voucher,
    npy_bytes,
    parse_npy,
)
from daimon_node.proofs.sandbox import Sandbox

F, C = 8, 3
CHAIN = b"\x11" * 32
PRICE = 5
USER = KeyPair.from_label("market-user")
STRANGER = KeyPair.from_label("market-stranger")
RUNNER = KeyPair.from_label("market-runner")
SPEC = InputSpec((F,), "float32", 0, 16, 1)


def model_bytes(seed: int = 0) -> bytes:
    w = np.random.default_rng(seed).standard_normal((F, C)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Softmax", ["h"], ["y"], axis=1)], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, F])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, C])], initializer=[numpy_helper.from_array(w, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def local_scores(model: bytes, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    return ort.InferenceSession(model, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


@pytest.fixture(scope="module")
def sandbox():  # type: ignore[no-untyped-def]
    sb = Sandbox()
    yield sb
    sb.close()


@pytest.fixture()
def world(sandbox, tmp_path):  # type: ignore[no-untyped-def]
    channels = {USER.address_bytes: Channel(deposit=100, redeemed=0, expires_period=50, epoch=0)}
    period = {"now": 3}
    service = InferService(RUNNER.address_bytes, VoucherBook.load(tmp_path / "vouchers.json"), sandbox,
                           lambda chain, payer: channels.get(payer) if chain == CHAIN else None,
                           lambda chain: period["now"])
    params = SimpleNamespace(input_spec=SPEC, num_classes=C, max_model_bytes=10**7, max_infer_ms=30_000)
    model = model_bytes()
    import hashlib

    service.served[CHAIN] = Served(CHAIN, params, hashlib.sha256(model).digest(), model, PRICE)  # type: ignore[arg-type]
    return SimpleNamespace(service=service, channels=channels, period=period, model=model, path=tmp_path / "vouchers.json")


X = np.random.default_rng(3).uniform(0, 16, (4, F)).astype(np.float32)


def call(world, voucher, x=X):  # type: ignore[no-untyped-def]
    return trio.run(world.service.handle_request, ["infer", CHAIN, voucher.encode(), npy_bytes(x)])


def voucher(cumulative: int, keys: KeyPair = USER, epoch: int = 0, runner: bytes = RUNNER.address_bytes):  # type: ignore[no-untyped-def]
    return make_voucher(keys, CHAIN, runner, epoch, cumulative)


def assert_refused(reply, code: str) -> None:  # type: ignore[no-untyped-def]
    assert reply[0] == "err" and reply[1] == code, reply


def test_paid_call_returns_the_committed_models_local_outputs(world) -> None:  # type: ignore[no-untyped-def]
    reply = call(world, voucher(PRICE))
    assert reply[0] == "ok", reply
    assert reply[1] == world.service.served[CHAIN].digest
    np.testing.assert_array_equal(parse_npy(reply[2]), local_scores(world.model, X))
    assert reply[3] == str(PRICE)
    assert world.service.calls == 1


def test_successive_vouchers_each_pay_one_call(world) -> None:  # type: ignore[no-untyped-def]
    for k in range(1, 4):
        assert call(world, voucher(k * PRICE))[0] == "ok"
    assert world.service.book.accepted[(CHAIN, USER.address_bytes)].cumulative == 3 * PRICE


def test_replayed_voucher_is_refused(world) -> None:  # type: ignore[no-untyped-def]
    v = voucher(PRICE)
    assert call(world, v)[0] == "ok"
    assert_refused(call(world, v), "replayed")
    assert world.service.calls == 1


def test_replay_after_restart_is_refused(world, sandbox) -> None:  # type: ignore[no-untyped-def]
    v = voucher(PRICE)
    assert call(world, v)[0] == "ok"
    world.service.book = VoucherBook.load(world.path)  # the runner restarted
    assert_refused(call(world, v), "replayed")


def test_voucher_below_what_the_chain_redeemed_is_refused(world) -> None:  # type: ignore[no-untyped-def]
    world.channels[USER.address_bytes] = Channel(100, 40, 50, 0)
    assert_refused(call(world, voucher(40)), "replayed")
    assert call(world, voucher(45))[0] == "ok"


def test_underpaid_voucher_is_refused(world) -> None:  # type: ignore[no-untyped-def]
    assert_refused(call(world, voucher(PRICE - 1)), "underpaid")


def test_overspent_voucher_is_refused(world) -> None:  # type: ignore[no-untyped-def]
    assert_refused(call(world, voucher(101)), "overspent")


def test_forged_vouchers_are_refused(world) -> None:  # type: ignore[no-untyped-def]
    v = voucher(PRICE)
    assert_refused(call(world, dataclasses.replace(v, cumulative=50)), "forged")  # amount changed after signing
    # signed by a stranger who claims to be the user
    forged = dataclasses.replace(voucher(PRICE, keys=STRANGER), payer=USER.public_key)
    assert_refused(call(world, forged), "forged")
    assert_refused(call(world, voucher(PRICE, runner=STRANGER.address_bytes)), "forged")  # for another runner
    assert world.service.calls == 0


def test_payer_without_channel_is_refused(world) -> None:  # type: ignore[no-untyped-def]
    assert_refused(call(world, voucher(PRICE, keys=STRANGER)), "no_channel")


def test_old_epoch_and_expiring_channel_are_refused(world) -> None:  # type: ignore[no-untyped-def]
    world.channels[USER.address_bytes] = Channel(100, 0, 50, 1)
    assert_refused(call(world, voucher(PRICE, epoch=0)), "stale_epoch")
    world.period["now"] = 49
    assert_refused(call(world, voucher(PRICE, epoch=1)), "channel_expiring")


@pytest.mark.parametrize("x, what", [
    (X.astype(np.float64), "dtype"),
    (np.zeros((2, F + 1), np.float32), "shape"),
    (np.full((2, F), 17, np.float32), "values"),
    (np.full((2, F), np.nan, np.float32), "NaN"),
])
def test_bad_inputs_take_no_payment(world, x, what) -> None:  # type: ignore[no-untyped-def]
    reply = call(world, voucher(PRICE), x)
    assert_refused(reply, "bad_input")
    assert what in reply[2]
    assert (CHAIN, USER.address_bytes) not in world.service.book.accepted
    assert call(world, voucher(PRICE))[0] == "ok"  # the same amount still buys a call


def test_check_inputs_accepts_one_input_as_a_batch_of_one() -> None:
    assert check_inputs(X[0], SPEC).shape == (1, F)
    with pytest.raises(InferError):
        check_inputs(np.zeros((0, F), np.float32), SPEC)


def test_quote_reports_price_digest_and_what_was_paid(world) -> None:  # type: ignore[no-untyped-def]
    call(world, voucher(PRICE))
    reply = trio.run(world.service.handle_request, ["quote", CHAIN, USER.address_bytes])
    assert reply == ["ok", str(PRICE), world.service.served[CHAIN].digest, str(PRICE), 0]
    assert_refused(trio.run(world.service.handle_request, ["quote", b"\x22" * 32, USER.address_bytes]), "not_serving")
    assert_refused(trio.run(world.service.handle_request, ["bogus"]), "bad_request")


# --- the user's choice of offer -----------------------------------------------------------
OFFERS = [
    {"provider": "0x" + "aa" * 20, "price": "7", "model_digest": "0x" + "01" * 32, "peer_id": "p1"},
    {"provider": "0x" + "bb" * 20, "price": "3", "model_digest": "0x" + "02" * 32, "peer_id": "p2"},
    {"provider": "0x" + "cc" * 20, "price": "5", "model_digest": "0x" + "01" * 32, "peer_id": "p3"},
]


def test_pick_offer_takes_the_cheapest_current_one() -> None:
    assert pick_offer(OFFERS, "0x" + "01" * 32, None, None)["provider"] == "0x" + "cc" * 20
    assert pick_offer(OFFERS, "0x" + "01" * 32, 10, bytes.fromhex("aa" * 20))["price"] == "7"


def test_pick_offer_detects_stale_runners_by_digest() -> None:
    with pytest.raises(StaleModel, match="stale"):
        pick_offer(OFFERS, "0x" + "03" * 32, None, None)
    with pytest.raises(StaleModel):
        pick_offer(OFFERS, "0x" + "01" * 32, None, bytes.fromhex("bb" * 20))  # that runner serves 02


def test_pick_offer_respects_max_price() -> None:
    from daimon_node.cli.chain import ChainCommandError

    with pytest.raises(ChainCommandError, match="max-price"):
        pick_offer(OFFERS, "0x" + "01" * 32, 4, None)


def _settled_in_a_season() -> tuple[object, bytes]:
    """A devnet whose one improvement settled inside a season: provisional, not yet confirmed."""
    from chain.devnet import Devnet, DevnetConfig, corrupt
    from chain.types import Anchor

    d = Devnet(DevnetConfig(holdout_m=50))
    d.start()
    d.bond_validators()
    keys, digest = d.improver_keys[0], b"\x42" * 32
    d.commit(transactions=[d.register(keys, digest)])
    labels = corrupt(d.truth, 0.2, d.cfg.num_classes, 1)
    holdout = corrupt(d.holdout_truth, 0.2, d.cfg.num_classes, 2)
    poi, reveal = d.prove(keys, digest, labels, holdout)
    d.commit(anchor=Anchor(poi, tuple(d.vote(v, poi, reveal) for v in d.validator_keys)))
    d.commit(settlement=reveal)
    return d, digest


@pytest.mark.parametrize("serve", ["confirmed", "provisional"])
def test_runner_serves_only_the_confirmed_model_by_default(serve: str) -> None:
    """A model settled in a season may still burn at the holdout reveal: the default runner waits for
    it to be confirmed and never fetches it; a ``provisional`` runner goes for it at once."""
    from chain.state import get_meta
    from daimon_node.daemon.runner import RunnerRole

    d, digest = _settled_in_a_season()
    meta = get_meta(d.state)  # type: ignore[attr-defined]
    assert meta.provisional is not None and meta.provisional.digest == digest and meta.confirmed is None
    fetched: list[bytes] = []

    async def fetch_content(content_id: bytes, max_bytes: int) -> bytes:
        fetched.append(content_id)
        raise OSError("no peer holds it")  # stops the step before it serves anything

    role = RunnerRole(PRICE, serve=serve)
    role.service = SimpleNamespace(served={})  # type: ignore[assignment]
    handle = SimpleNamespace(started=True, state=d.state, chain_id=d.chain_id)  # type: ignore[attr-defined]
    ctx = SimpleNamespace(now=lambda: 0.0, fetch_content=fetch_content)
    trio.run(role.step, ctx, handle)
    if serve == "confirmed":
        assert fetched == [] and role.status == "waiting for a confirmed model"
    else:
        assert fetched == [digest]
