"""What a paid inference call costs on top of the model and the network, measured in one run.

    .venv/bin/python benchmarks/market_bench.py [--calls 200] [--rounds 5]

For each model (the tiny MatMul+Softmax 64x10 and a small CNN on 28x28 inputs) and each
batch size (1 and 64), four rows, each in microseconds per call:

- ``bare onnxruntime``: ``InferenceSession.run`` in this process, one thread like the sandbox;
- ``bare request/response``: a libp2p round trip over ``p2p.reqresp`` (one reused stream)
  carrying a request and a response of the same sizes as the paid call's, answered at once;
- ``runner, no network``: ``InferService.handle`` called directly (voucher check, the warm
  sandbox session in its worker process, npy encoding);
- ``paid call over /daimon/infer/1``: a second node sends a fresh voucher and the inputs.

``overhead`` = paid call - (bare request/response + bare onnxruntime): what the market adds
(the payer's voucher signature and the runner's check of it, input checks, the hop to the
sandbox's worker process, encoding). The rows are measured in
interleaved rounds and each figure is the median round, so a load spike on a shared machine
moves one round, not one row.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from chain.crypto import KeyPair  # noqa: E402
from chain.records import Channel
from chain.types import InputSpec  # noqa: E402
from daimon_node.market.messages import Inference, InferRequest, npy_bytes  # noqa: E402
from daimon_node.market.service import InferService, Served  # noqa: E402
from daimon_node.market.vouchers import VoucherBook, make_voucher  # noqa: E402
from daimon_node.market.wire import INFER_LIMITS, INFER_PROTOCOL, InferCodec  # noqa: E402
from daimon_node.proofs.sandbox import Sandbox  # noqa: E402
from p2p import P2PConfig, P2PNode  # noqa: E402

CLASSES = 10
ECHO_PROTOCOL = "/bench/echo/1"


class BytesCodec:
    """Bytes in, bytes out: the bare round trip."""

    def encode_request(self, request: bytes) -> bytes:
        return request

    decode_request = encode_response = decode_response = encode_request


def tiny_model() -> tuple[bytes, tuple[int, ...]]:
    """MatMul + Softmax, 64 features -> 10 classes (the testnet's 'linear' example's shape)."""
    from onnx import TensorProto, helper, numpy_helper

    w = np.random.default_rng(0).standard_normal((64, CLASSES)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Softmax", ["h"], ["y"], axis=1)], "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, CLASSES])],
        initializer=[numpy_helper.from_array(w, "w")])
    return _finish(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])), (64,)


def cnn_model() -> tuple[bytes, tuple[int, ...]]:
    """A small MNIST-style CNN on 1x28x28: conv 8@3x3, relu, pool 2, conv 16@3x3, relu, pool 2, dense 10, softmax."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(1)

    def init(name: str, *shape: int) -> object:
        return numpy_helper.from_array((rng.standard_normal(shape) / np.sqrt(np.prod(shape[1:]))).astype(np.float32), name)

    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["p1", "w2", "b2"], ["c2"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("MaxPool", ["r2"], ["p2"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Flatten", ["p2"], ["f"], axis=1),
        helper.make_node("Gemm", ["f", "w3", "b3"], ["logits"], transB=1),
        helper.make_node("Softmax", ["logits"], ["y"], axis=1),
    ]
    inits = [init("w1", 8, 1, 3, 3), init("b1", 8), init("w2", 16, 8, 3, 3), init("b2", 16),
             init("w3", CLASSES, 16 * 7 * 7), init("b3", CLASSES)]
    graph = helper.make_graph(nodes, "cnn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 1, 28, 28])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, CLASSES])],
                              initializer=inits)  # type: ignore[arg-type]
    return _finish(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])), (1, 28, 28)


def _finish(model: object) -> bytes:
    model.ir_version = 8  # type: ignore[attr-defined]
    return model.SerializeToString()  # type: ignore[attr-defined,no-any-return]


async def per_call_us(fn: Callable[[], Awaitable[object]], calls: int) -> float:
    t = time.perf_counter()
    for _ in range(calls):
        await fn()
    return (time.perf_counter() - t) / calls * 1e6


class Case:
    """One model at one batch size, with its runner, user, and the four timed calls."""

    def __init__(self, name: str, model: bytes, shape: tuple[int, ...], batch: int, service: InferService) -> None:
        import onnxruntime as ort

        self.name, self.model, self.batch, self.service = name, model, batch, service
        self.chain = hashlib.sha256(f"{name}/{batch}".encode()).digest()  # one served chain per case
        self.x = np.random.default_rng(2).uniform(0, 1, (batch, *shape)).astype(np.float32)
        self.user, self.runner = KeyPair.from_label("bench-user"), KeyPair.from_label("bench-runner")  # as in bench()
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        so.inter_op_num_threads = 1
        self.session = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
        params = SimpleNamespace(input_spec=InputSpec(shape, "float32", 0, 1, 1), num_classes=CLASSES,
                                 max_model_bytes=10**8, max_infer_ms=30_000)
        self.digest = hashlib.sha256(model).digest()
        service.served[self.chain] = Served(self.chain, params, self.digest, model, 1)  # type: ignore[arg-type]
        self.inputs = npy_bytes(self.x)
        self.cumulative = 0
        self.timings: dict[str, list[float]] = {k: [] for k in ("ort", "rr", "direct", "paid")}

    def request(self) -> InferRequest:
        self.cumulative += self.batch  # price 1 per input
        voucher = make_voucher(self.user, self.chain, self.runner.address_bytes, 0, self.cumulative)
        return InferRequest(self.chain, voucher, self.inputs)

    def sizes(self) -> tuple[int, int]:
        """Bytes of the paid call's request and response frames (what the bare round trip carries)."""
        codec = InferCodec()
        scores = npy_bytes(np.zeros((self.batch, CLASSES), np.float32))
        return (len(codec.encode_request(self.request())),
                len(codec.encode_response(Inference(self.digest, scores, self.cumulative))))

    async def ort_call(self) -> None:
        self.session.run(None, {"x": self.x})

    async def direct_call(self) -> None:
        reply = await self.service.handle("bench", self.request())
        assert isinstance(reply, Inference), reply


async def measure(case: Case, user: P2PNode, runner_peer: str, calls: int, rounds: int) -> None:
    infer = user.request_response(INFER_PROTOCOL, InferCodec(), INFER_LIMITS)
    echo = user.request_response(ECHO_PROTOCOL, BytesCodec(), INFER_LIMITS)
    request_bytes, _ = case.sizes()
    payload = b"\0" * request_bytes

    async def paid() -> None:
        reply = await infer.request(runner_peer, case.request())
        assert isinstance(reply, Inference), reply

    async def bare_rr() -> None:
        await echo.request(runner_peer, payload)

    for fn in (case.ort_call, case.direct_call, paid, bare_rr):  # warm: session built, streams open
        for _ in range(3):
            await fn()
    for _ in range(rounds):
        case.timings["ort"].append(await per_call_us(case.ort_call, calls))
        case.timings["rr"].append(await per_call_us(bare_rr, calls))
        case.timings["direct"].append(await per_call_us(case.direct_call, calls))
        case.timings["paid"].append(await per_call_us(paid, calls))


def report(case: Case) -> str:
    med = {k: statistics.median(v) for k, v in case.timings.items()}
    overhead = med["paid"] - (med["rr"] + med["ort"])
    rows = [
        f"{case.name}, batch {case.batch} ({len(case.model)} B model, {case.x.nbytes} B inputs)",
        f"  bare onnxruntime (in process, 1 thread)     {med['ort']:9.0f} us/call",
        f"  bare request/response (libp2p, same bytes)  {med['rr']:9.0f} us/call",
        f"  runner, no network (voucher + warm sandbox) {med['direct']:9.0f} us/call",
        f"  paid call over /daimon/infer/1              {med['paid']:9.0f} us/call  ({1e6 / med['paid']:.0f} calls/s, "
        f"{1e6 * case.batch / med['paid']:.0f} inputs/s)",
        f"  overhead = paid - (request/response + onnxruntime) = {overhead:.0f} us/call "
        f"(rounds: paid {min(case.timings['paid']):.0f}-{max(case.timings['paid']):.0f} us)",
    ]
    return "\n".join(rows)


async def bench(args: argparse.Namespace) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="market_bench_"))
    sandbox = Sandbox()
    user_keys, runner_keys = KeyPair.from_label("bench-user"), KeyPair.from_label("bench-runner")
    service = InferService(runner_keys.address_bytes, VoucherBook(None), sandbox,
                           lambda chain, payer: Channel(10**30, 0, 10**6, 0), lambda chain: 1)
    cases = [Case(name, model, shape, batch, service)
             for name, (model, shape) in (("tiny MatMul+Softmax 64x10", tiny_model()), ("CNN 1x28x28", cnn_model()))
             for batch in args.batches]
    runner = P2PNode(P2PConfig(seed=runner_keys.seed, content_dir=tmp / "runner"))
    user = P2PNode(P2PConfig(seed=user_keys.seed, content_dir=tmp / "user"))
    runner.request_response(INFER_PROTOCOL, InferCodec(), INFER_LIMITS).serve(service.handle)
    response = [b""]

    async def echo(peer: str, request: bytes) -> bytes:
        return response[0]

    runner.request_response(ECHO_PROTOCOL, BytesCodec(), INFER_LIMITS).serve(echo)
    load_before = open("/proc/loadavg").read().strip()
    async with trio.open_nursery() as nursery:
        await nursery.start(runner.run)
        await nursery.start(user.run)
        peer = await user.connect(runner.listen_addrs()[0])
        for case in cases:
            response[0] = b"\0" * case.sizes()[1]
            calls = max(10, args.calls // case.batch) if case.batch > 1 else args.calls
            await measure(case, user, peer, calls, args.rounds)
        nursery.cancel_scope.cancel()
    sandbox.close()
    print(f"market_bench: {args.rounds} rounds per row, cpus {os.cpu_count()}, "
          f"/proc/loadavg before {load_before}, after {open('/proc/loadavg').read().strip()}")
    for case in cases:
        print(report(case))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=200, help="calls per round at batch 1 (fewer, at least 10, for larger batches)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 64])
    trio.run(bench, parser.parse_args())


if __name__ == "__main__":
    main()
