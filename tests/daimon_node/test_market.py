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
from daimon_node.market.errors import InferError
from daimon_node.market.messages import Inference, InferRequest, Quote, QuoteRequest, Refusal, npy_bytes, parse_npy
from daimon_node.market.service import InferService, Served, check_inputs
from daimon_node.market.vouchers import VoucherBook, make_voucher
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
COST = PRICE * len(X)  # the price is per input row


def call(world, voucher, x=X):  # type: ignore[no-untyped-def]
    return trio.run(world.service.handle, "peer", InferRequest(CHAIN, voucher, npy_bytes(x)))


def voucher(cumulative: int, keys: KeyPair = USER, epoch: int = 0, runner: bytes = RUNNER.address_bytes):  # type: ignore[no-untyped-def]
    return make_voucher(keys, CHAIN, runner, epoch, cumulative)


def assert_refused(reply, code: str) -> None:  # type: ignore[no-untyped-def]
    assert isinstance(reply, Refusal) and reply.code == code, reply


def ok(reply) -> bool:  # type: ignore[no-untyped-def]
    return isinstance(reply, (Inference, Quote))


def test_paid_call_returns_the_committed_models_local_outputs(world) -> None:  # type: ignore[no-untyped-def]
    reply = call(world, voucher(COST))
    assert isinstance(reply, Inference), reply
    assert reply.model_digest == world.service.served[CHAIN].digest
    np.testing.assert_array_equal(parse_npy(reply.scores_npy), local_scores(world.model, X))
    assert reply.cumulative == COST
    assert world.service.calls == 1 and world.service.items == len(X)


def test_successive_vouchers_each_pay_one_call(world) -> None:  # type: ignore[no-untyped-def]
    for k in range(1, 4):
        assert ok(call(world, voucher(k * COST)))
    assert world.service.book.accepted[(CHAIN, USER.address_bytes)].cumulative == 3 * COST


def test_replayed_voucher_is_refused(world) -> None:  # type: ignore[no-untyped-def]
    v = voucher(COST)
    assert ok(call(world, v))
    assert_refused(call(world, v), "replayed")
    assert world.service.calls == 1


def test_replay_after_restart_is_refused(world, sandbox) -> None:  # type: ignore[no-untyped-def]
    v = voucher(COST)
    assert ok(call(world, v))
    world.service.book = VoucherBook.load(world.path)  # the runner restarted
    assert_refused(call(world, v), "replayed")


def test_voucher_below_what_the_chain_redeemed_is_refused(world) -> None:  # type: ignore[no-untyped-def]
    world.channels[USER.address_bytes] = Channel(100, 40, 50, 0)
    assert_refused(call(world, voucher(40)), "replayed")
    assert ok(call(world, voucher(40 + COST)))


def test_underpaid_voucher_is_refused(world) -> None:  # type: ignore[no-untyped-def]
    assert_refused(call(world, voucher(COST - 1)), "underpaid")  # pays 4 rows less one unit


def test_overspent_voucher_is_refused(world) -> None:  # type: ignore[no-untyped-def]
    assert_refused(call(world, voucher(101)), "overspent")


def test_forged_vouchers_are_refused(world) -> None:  # type: ignore[no-untyped-def]
    v = voucher(COST)
    assert_refused(call(world, dataclasses.replace(v, cumulative=50)), "forged")  # amount changed after signing
    # signed by a stranger who claims to be the user
    forged = dataclasses.replace(voucher(COST, keys=STRANGER), payer=USER.public_key)
    assert_refused(call(world, forged), "forged")
    assert_refused(call(world, voucher(COST, runner=STRANGER.address_bytes)), "forged")  # for another runner
    assert world.service.calls == 0


def test_payer_without_channel_is_refused(world) -> None:  # type: ignore[no-untyped-def]
    assert_refused(call(world, voucher(COST, keys=STRANGER)), "no_channel")


def test_old_epoch_and_expiring_channel_are_refused(world) -> None:  # type: ignore[no-untyped-def]
    world.channels[USER.address_bytes] = Channel(100, 0, 50, 1)
    assert_refused(call(world, voucher(COST, epoch=0)), "stale_epoch")
    world.period["now"] = 49
    assert_refused(call(world, voucher(COST, epoch=1)), "channel_expiring")


@pytest.mark.parametrize("x, what", [
    (X.astype(np.float64), "dtype"),
    (np.zeros((2, F + 1), np.float32), "shape"),
    (np.full((2, F), 17, np.float32), "values"),
    (np.full((2, F), np.nan, np.float32), "NaN"),
])
def test_bad_inputs_take_no_payment(world, x, what) -> None:  # type: ignore[no-untyped-def]
    reply = call(world, voucher(COST), x)
    assert_refused(reply, "bad_input")
    assert what in reply.message
    assert (CHAIN, USER.address_bytes) not in world.service.book.accepted
    assert ok(call(world, voucher(COST)))  # the same amount still buys a call


def test_check_inputs_accepts_one_input_as_a_batch_of_one() -> None:
    assert check_inputs(X[0], SPEC).shape == (1, F)
    with pytest.raises(InferError):
        check_inputs(np.zeros((0, F), np.float32), SPEC)


def test_quote_reports_price_digest_and_what_was_paid(world) -> None:  # type: ignore[no-untyped-def]
    call(world, voucher(COST))
    reply = trio.run(world.service.handle, "peer", QuoteRequest(CHAIN, USER.address_bytes))
    assert reply == Quote(PRICE, world.service.served[CHAIN].digest, COST, 0)
    assert_refused(trio.run(world.service.handle, "peer", QuoteRequest(b"\x22" * 32, USER.address_bytes)), "not_serving")


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


# --- batch pricing -------------------------------------------------------------------------
def test_a_batch_is_priced_per_input(world) -> None:  # type: ignore[no-untyped-def]
    batch = np.random.default_rng(4).uniform(0, 16, (64, F)).astype(np.float32)
    world.channels[USER.address_bytes] = Channel(deposit=65 * PRICE, redeemed=0, expires_period=50, epoch=0)
    assert_refused(call(world, voucher(64 * PRICE - 1), batch), "underpaid")  # one unit short of 64 inputs
    reply = call(world, voucher(64 * PRICE), batch)
    assert isinstance(reply, Inference) and parse_npy(reply.scores_npy).shape == (64, C)
    one = call(world, voucher(64 * PRICE + PRICE), X[0])  # one input without a batch axis is one row
    assert isinstance(one, Inference) and parse_npy(one.scores_npy).shape == (1, C)
    assert world.service.items == 65


def test_runner_reuses_its_warm_session(world, sandbox) -> None:  # type: ignore[no-untyped-def]
    loaded = sandbox.sessions_loaded
    for k in range(1, 4):
        assert ok(call(world, voucher(k * COST)))
    assert sandbox.sessions_loaded - loaded <= 1  # built at most once (the module's sandbox may hold it)


# --- the paying user's channel client --------------------------------------------------------
class FakeNode:
    """A ``MarketNode`` whose runner answers with ``self.refuse`` (a typed refusal) or the scores."""

    def __init__(self, digest: bytes) -> None:
        self.digest = digest
        self.channel_view = None
        self.opened: list[int] = []
        self.sent: list[int] = []
        self.refuse: InferError | None = None
        self.paid = 0

    def quote(self, chain_id, runner, payer):  # type: ignore[no-untyped-def]
        return Quote(PRICE, self.digest, self.paid, 0)

    def channel(self, chain_id, payer, runner):  # type: ignore[no-untyped-def]
        return self.channel_view

    def period(self, chain_id):  # type: ignore[no-untyped-def]
        return 3

    def open_channel(self, chain_id, runner, amount, expires_period):  # type: ignore[no-untyped-def]
        from daimon_node.market.channel_client import ChannelView

        self.opened.append(amount)
        self.channel_view = ChannelView(amount, 0, expires_period, 0, True)

    def infer(self, chain_id, runner, voucher, inputs_npy):  # type: ignore[no-untyped-def]
        self.sent.append(voucher.cumulative)
        if self.refuse is not None:
            raise self.refuse
        self.paid = voucher.cumulative
        return Inference(self.digest, npy_bytes(np.zeros((len(parse_npy(inputs_npy)), C), np.float32)), voucher.cumulative)


@pytest.fixture()
def payer(tmp_path):  # type: ignore[no-untyped-def]
    from daimon_node.market.channel_client import CallTerms, ChannelClient, VoucherLedger

    node = FakeNode(b"\x07" * 32)
    client = ChannelClient(USER, VoucherLedger(tmp_path / "vouchers.json"), node)
    terms = CallTerms(node.digest)  # the model the user pays for
    return SimpleNamespace(node=node, client=client, pay=lambda x=X: client.call(CHAIN, RUNNER.address_bytes, x, 1, terms))


def test_channel_client_pays_per_input_and_opens_a_channel_once(payer) -> None:  # type: ignore[no-untyped-def]
    paid = payer.pay()
    assert paid.cost == COST and paid.inference.cumulative == COST
    assert payer.node.opened == [100 * COST]  # the default deposit: 100 calls like this one
    assert payer.pay().inference.cumulative == 2 * COST
    assert payer.node.opened == [100 * COST]


@pytest.mark.parametrize("error_code", ["run_failed", "bad_input", "underpaid", "not_serving"])
def test_refusals_the_runner_kept_nothing_of_are_refunded(payer, error_code: str) -> None:  # type: ignore[no-untyped-def]
    from daimon_node.market.errors import refusal

    payer.pay()
    payer.node.refuse = refusal(error_code, "no")
    with pytest.raises(InferError) as info:
        payer.pay()
    assert info.value.wire_code == error_code and not info.value.voucher_kept
    payer.node.refuse = None
    assert payer.pay().inference.cumulative == 2 * COST  # the refused amount was reused
    assert payer.node.sent == [COST, 2 * COST, 2 * COST]


@pytest.mark.parametrize("error_code", ["replayed", "some_future_code"])
def test_refusals_that_may_keep_the_voucher_are_not_refunded(payer, error_code: str) -> None:  # type: ignore[no-untyped-def]
    from daimon_node.market.channel_client import LedgerEntry
    from daimon_node.market.errors import refusal

    payer.pay()
    payer.node.refuse = refusal(error_code, "no")
    with pytest.raises(InferError) as info:
        payer.pay()
    assert info.value.voucher_kept
    assert payer.client.ledger.get(CHAIN, RUNNER.address_bytes) == LedgerEntry(0, 2 * COST)  # never signs below


def test_refusal_codes_map_to_their_types() -> None:
    from daimon_node.market import errors

    assert isinstance(errors.refusal("run_failed", "x"), errors.RunFailed)
    assert isinstance(errors.refusal("replayed", "x"), errors.Replayed)
    unknown = errors.refusal("zzz", "x")
    assert type(unknown) is InferError and unknown.wire_code == "zzz" and unknown.voucher_kept


def test_rpc_relay_turns_a_rejection_rule_into_its_type(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from daimon_node.cli.market import RpcMarketNode
    from daimon_node.market.errors import RunFailed
    from daimon_node.rpc.errors import Rejected

    class Client:
        def call(self, method, *params):  # type: ignore[no-untyped-def]
            raise Rejected("runner refused: run_failed: model crashed", rule="run_failed")

    with pytest.raises(RunFailed):
        RpcMarketNode(Client(), tmp_path).quote(CHAIN, RUNNER.address_bytes, USER.address_bytes)


def test_stale_runner_is_refused_before_paying(payer) -> None:  # type: ignore[no-untyped-def]
    payer.node.digest = b"\x08" * 32  # the runner now serves another model
    with pytest.raises(StaleModel):
        payer.pay()
    assert payer.node.sent == []


# --- the runner's voucher log ------------------------------------------------------------------
def test_voucher_log_appends_per_call_and_survives_restarts(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import json

    from daimon_node.market.vouchers import COMPACT_SLACK

    channel = Channel(deposit=10**6, redeemed=0, expires_period=50, epoch=0)
    book = VoucherBook.load(tmp_path / "book")
    accepted = [voucher(k * PRICE) for k in range(1, 4)]
    for v in accepted:
        book.accept(v, chain_id=CHAIN, runner=RUNNER.address_bytes, cost=PRICE, channel=channel, period=3)
    assert len((tmp_path / "book").read_text().split()) == 3  # one line per accepted call, no rewrite
    book.roll_back(accepted[-1], accepted[-2])  # the last call failed on the runner's side
    again = VoucherBook.load(tmp_path / "book")
    assert again.accepted[(CHAIN, USER.address_bytes)] == accepted[-2]  # the rolled-back voucher stays forgotten
    for k in range(4, 4 + COMPACT_SLACK + 8):  # past the compaction bound for one payer: rewritten to one line
        again.accept(voucher(k * PRICE), chain_id=CHAIN, runner=RUNNER.address_bytes, cost=PRICE, channel=channel,
                     period=3)
    assert len((tmp_path / "book").read_text().split()) < COMPACT_SLACK
    (tmp_path / "legacy").write_text(json.dumps([accepted[0].encode().hex()]))  # the format of earlier versions
    assert VoucherBook.load(tmp_path / "legacy").accepted[(CHAIN, USER.address_bytes)] == accepted[0]
