"""Inference calls/s through a runner (``/daimon/infer/1`` over libp2p, voucher checks,
sandboxed onnxruntime) vs bare onnxruntime, in the same run, on the same model and inputs.

    .venv/bin/python benchmarks/market_bench.py [--calls 200] [--batch 1]

Three rows: bare ``InferenceSession.run`` in this process; the runner's service called
directly (voucher check + sandbox worker, no network); the full path: a second libp2p
node opens a stream per call, sends a fresh voucher and the inputs, and reads the scores.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from chain.crypto import KeyPair  # noqa: E402
from chain.records import Channel
from chain.types import InputSpec  # noqa: E402
from daimon_node.market.service import INFER_PROTOCOL, InferService, Served, VoucherBook, make_voucher, npy_bytes, request  # noqa: E402
from daimon_node.proofs.sandbox import Sandbox  # noqa: E402
from p2p import P2PConfig, P2PNode  # noqa: E402

CHAIN = b"\x42" * 32


def example_model(features: int, classes: int) -> bytes:
    """The testnet's 'linear' digits example when sklearn is there, else a MatMul+Softmax of the same shape."""
    from onnx import TensorProto, helper, numpy_helper

    w = np.random.default_rng(0).standard_normal((features, classes)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Softmax", ["h"], ["y"], axis=1)], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, features])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, classes])],
        initializer=[numpy_helper.from_array(w, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


async def bench(args: argparse.Namespace) -> None:
    import onnxruntime as ort

    features, classes = 64, 10
    model = example_model(features, classes)
    x = np.random.default_rng(1).uniform(0, 16, (args.batch, features)).astype(np.float32)
    user, runner = KeyPair.from_label("bench-user"), KeyPair.from_label("bench-runner")

    # 1. bare onnxruntime, one thread like the sandbox
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
    sess.run(None, {"x": x})
    t = time.perf_counter()
    for _ in range(args.calls):
        sess.run(None, {"x": x})
    bare = args.calls / (time.perf_counter() - t)

    tmp = Path(tempfile.mkdtemp(prefix="market_bench_"))
    sandbox = Sandbox()
    service = InferService(runner.address_bytes, VoucherBook(None), sandbox,
                           lambda chain, payer: Channel(10**30, 0, 10**6, 0), lambda chain: 1)
    params = SimpleNamespace(input_spec=InputSpec((features,), "float32", 0, 16, 1), num_classes=classes,
                             max_model_bytes=10**8, max_infer_ms=30_000)
    service.served[CHAIN] = Served(CHAIN, params, hashlib.sha256(model).digest(), model, 1)  # type: ignore[arg-type]
    cumulative = 0

    def next_voucher() -> bytes:
        nonlocal cumulative
        cumulative += 1
        return make_voucher(user, CHAIN, runner.address_bytes, 0, cumulative).encode()

    inputs = npy_bytes(x)
    cold = time.perf_counter()
    assert (await service.handle_request(["infer", CHAIN, next_voucher(), inputs]))[0] == "ok"
    cold = time.perf_counter() - cold
    # 2. the service directly
    t = time.perf_counter()
    for _ in range(args.calls):
        reply = await service.handle_request(["infer", CHAIN, next_voucher(), inputs])
        assert reply[0] == "ok", reply
    direct = args.calls / (time.perf_counter() - t)

    # 3. through libp2p: one stream per call
    a = P2PNode(P2PConfig(seed=runner.seed, content_dir=tmp / "a"))
    b = P2PNode(P2PConfig(seed=user.seed, content_dir=tmp / "b"))
    a.set_stream_handler(INFER_PROTOCOL, service.handle)
    async with trio.open_nursery() as nursery:
        await nursery.start(a.run)
        await nursery.start(b.run)
        peer = await b.connect(a.listen_addrs()[0])
        for _ in range(3):  # warm the connection
            await request(await b.open_stream(peer, INFER_PROTOCOL), ["infer", CHAIN, next_voucher(), inputs])
        t = time.perf_counter()
        for _ in range(args.calls):
            reply = await request(await b.open_stream(peer, INFER_PROTOCOL), ["infer", CHAIN, next_voucher(), inputs])
        networked = args.calls / (time.perf_counter() - t)
        nursery.cancel_scope.cancel()
    sandbox.close()
    print(f"market_bench: model MatMul+Softmax {features}x{classes} ({len(model)} B), batch {args.batch}, "
          f"{args.calls} calls each, cpus {os.cpu_count()}, load {os.getloadavg()[0]:.1f}")
    print(f"  sandbox cold start + first call        {cold * 1000:8.1f} ms")
    print(f"  bare onnxruntime (in process, 1 thread) {bare:8.0f} calls/s  {1e6 / bare:8.0f} us/call")
    print(f"  runner service, no network (voucher+sandbox) {direct:8.0f} calls/s  {1e6 / direct:8.0f} us/call")
    print(f"  runner over /daimon/infer/1 (libp2p)    {networked:8.0f} calls/s  {1e6 / networked:8.0f} us/call")
    print(f"  overhead vs bare: x{bare / networked:.0f} (network path), x{bare / direct:.0f} (sandbox path)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--batch", type=int, default=1)
    trio.run(bench, parser.parse_args())


if __name__ == "__main__":
    main()
