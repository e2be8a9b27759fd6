"""The model sandbox: hostile ONNX models fail with typed errors, in bounded time, and the node lives on."""

from __future__ import annotations

import os
import signal
import threading
import time

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from daimon_node.errors import DaimonError
from daimon_node.proofs.sandbox import (
    BadModel,
    BadModelOutput,
    ModelCrashed,
    ModelMemoryError,
    ModelTimeout,
    ModelTooLarge,
    Sandbox,
    SandboxError,
    SandboxLimits,
    array_from_blob,
    signature_mismatch,
)

N, F, C = 50, 64, 10
KEY = b"z" * 32
MAX_BYTES = 10**7


# ---------------------------------------------------------------------------
# Models built from pure ONNX operators
# ---------------------------------------------------------------------------
def _model(nodes: list, outputs: list, initializers: list = ()) -> bytes:  # type: ignore[type-arg]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, F])], outputs, initializer=list(initializers)
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def good_model(seed: int = 0) -> bytes:
    """softmax(x W): a valid (N, C) float32 score tensor."""
    w = np.random.default_rng(seed).standard_normal((F, C)).astype(np.float32) / 8
    return _model(
        [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Softmax", ["h"], ["y"], axis=1)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, C])],
        [numpy_helper.from_array(w, "w")],
    )


def forever_model(scores: tuple[int, list] = (TensorProto.FLOAT, [])) -> bytes:  # type: ignore[type-arg]
    """A Loop with a trip count of 2^62 whose state depends on the input (no constant folding).

    Its output is a scalar; ``scores`` is the type and shape it declares ([]: unknown rank)."""
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]), helper.make_node("Add", ["v_in", "one"], ["v_out"])],
        "body",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("v_in", TensorProto.FLOAT, []),
        ],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []), helper.make_tensor_value_info("v_out", TensorProto.FLOAT, [])],
        initializer=[numpy_helper.from_array(np.array(1.0, np.float32), "one")],
    )
    return _model(
        [
            helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0),
            helper.make_node("Loop", ["trips", "cond", "s"], ["y"], body=body),
        ],
        [helper.make_tensor_value_info("y", *scores)],
        [numpy_helper.from_array(np.array(2**62, np.int64), "trips"), numpy_helper.from_array(np.array(True), "cond")],
    )


def huge_alloc_model() -> bytes:
    """ConstantOfShape to 50,000 x 50,000 float32 = 10 GB, shape derived from the input."""
    return _model(
        [
            helper.make_node("Shape", ["x"], ["xs"]),
            helper.make_node("Mul", ["xs", "zero"], ["z"]),
            helper.make_node("Add", ["z", "big"], ["shape"]),
            helper.make_node("ConstantOfShape", ["shape"], ["y"], value=helper.make_tensor("v", TensorProto.FLOAT, [1], [1.0])),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, None])],
        [numpy_helper.from_array(np.array([0, 0], np.int64), "zero"), numpy_helper.from_array(np.array([50_000, 50_000], np.int64), "big")],
    )


def wrong_shape_model() -> bytes:
    """Returns the (N, 64) input as its 'scores'."""
    return _model([helper.make_node("Identity", ["x"], ["y"])], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, F])])


def int_output_model() -> bytes:
    """Returns (N, C) int64 'scores'."""
    return _model(
        [helper.make_node("Slice", ["x", "s", "e", "a"], ["h"]), helper.make_node("Cast", ["h"], ["y"], to=TensorProto.INT64)],
        [helper.make_tensor_value_info("y", TensorProto.INT64, [None, C])],
        [numpy_helper.from_array(np.array([0], np.int64), n) for n in ("s", "a")] + [numpy_helper.from_array(np.array([C], np.int64), "e")],
    )


def nan_model() -> bytes:
    """(N, C) scores that are all NaN: log of -1."""
    return _model(
        [
            helper.make_node("Slice", ["x", "s", "e", "a"], ["h"]),
            helper.make_node("Mul", ["h", "zero"], ["z"]),
            helper.make_node("Sub", ["z", "one"], ["m"]),
            helper.make_node("Log", ["m"], ["y"]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, C])],
        [numpy_helper.from_array(np.array([0], np.int64), n) for n in ("s", "a")]
        + [numpy_helper.from_array(np.array([C], np.int64), "e"), numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
           numpy_helper.from_array(np.array(1.0, np.float32), "one")],
    )


def external_data_model() -> bytes:
    """An initializer whose bytes would come from a file on the validator's disk."""
    w = onnx.TensorProto()
    w.name, w.data_type = "w", TensorProto.UINT8
    w.dims.extend([4])
    w.data_location = TensorProto.EXTERNAL
    for key, value in (("location", "/etc/hostname"), ("offset", "0"), ("length", "4")):
        entry = w.external_data.add()
        entry.key, entry.value = key, value
    return _model([helper.make_node("Cast", ["w"], ["y"], to=TensorProto.FLOAT)],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])], [w])


@pytest.fixture(scope="module")
def z() -> np.ndarray:
    return np.random.default_rng(1).uniform(0, 16, (N, F)).astype(np.float32)


@pytest.fixture()
def sandbox():  # type: ignore[no-untyped-def]
    with Sandbox(SandboxLimits(memory_bytes=1 << 30, wall_seconds=3.0, startup_seconds=60.0)) as sb:
        sb.start()
        yield sb


def run(sb: Sandbox, model: bytes, z: np.ndarray, **kw) -> list[np.ndarray]:  # type: ignore[no-untyped-def]
    return sb.run(model, [(KEY, z)], num_classes=C, max_model_bytes=MAX_BYTES, **kw)


def assert_recovers(sb: Sandbox, z: np.ndarray) -> None:
    """After a failure the same Sandbox runs a good model correctly (restarting if needed)."""
    (scores,) = run(sb, good_model(), z)
    w = numpy_helper.to_array(onnx.load_from_string(good_model()).graph.initializer[0])
    h = z.astype(np.float64) @ w
    ref = np.exp(h - h.max(axis=1, keepdims=True))
    ref /= ref.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(scores, ref, rtol=1e-4, atol=1e-6)


# ---------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------
@pytest.mark.timeout(60)
def test_good_model_scores_on_a_warm_worker(sandbox: Sandbox, z: np.ndarray) -> None:
    pid = sandbox.pid
    assert pid is not None and pid != os.getpid()
    assert sandbox.cold_start_seconds is not None and sandbox.cold_start_seconds > 0
    assert_recovers(sandbox, z)
    (again,) = run(sandbox, good_model(), z)
    assert again.shape == (N, C) and again.dtype == np.float32
    assert sandbox.pid == pid  # the same warm worker served both runs
    assert sandbox.start() == 0.0  # already warm: no cold start


@pytest.mark.timeout(60)
def test_several_inputs_in_one_run(sandbox: Sandbox, z: np.ndarray) -> None:
    out = sandbox.run(good_model(), [(KEY, z), (b"h" * 32, z[:7])], num_classes=C, max_model_bytes=MAX_BYTES)
    assert [o.shape for o in out] == [(N, C), (7, C)]
    np.testing.assert_array_equal(out[0][:7], out[1])


@pytest.mark.timeout(30)
def test_invalid_oversized_model_is_never_loaded(z: np.ndarray) -> None:
    sb = Sandbox()
    model = good_model()
    with pytest.raises(ModelTooLarge) as info:
        sb.run(model, [(KEY, z)], num_classes=C, max_model_bytes=len(model) - 1)
    assert info.value.size == len(model) and info.value.limit == len(model) - 1
    assert sb.pid is None  # rejected before any worker was started
    sb.close()


@pytest.mark.timeout(60)
def test_invalid_model_that_loops_forever_times_out(sandbox: Sandbox, z: np.ndarray) -> None:
    t0 = time.monotonic()
    with pytest.raises(ModelTimeout):
        run(sandbox, forever_model(), z, wall_seconds=1.5)
    assert time.monotonic() - t0 < 10
    assert_recovers(sandbox, z)
    assert sandbox.restarts == 1


@pytest.mark.timeout(60)
def test_invalid_model_past_its_cpu_budget_dies_of_sigxcpu(z: np.ndarray) -> None:
    with Sandbox(SandboxLimits(wall_seconds=30.0, cpu_seconds=1.0)) as sb:
        t0 = time.monotonic()
        with pytest.raises(ModelTimeout, match="CPU"):
            run(sb, forever_model(), z)
        assert time.monotonic() - t0 < 30
        assert_recovers(sb, z)


@pytest.mark.timeout(60)
def test_invalid_model_allocating_10_gb_hits_the_memory_limit(sandbox: Sandbox, z: np.ndarray) -> None:
    t0 = time.monotonic()
    with pytest.raises(ModelMemoryError):
        run(sandbox, huge_alloc_model(), z)
    assert time.monotonic() - t0 < 10
    assert_recovers(sandbox, z)


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "make, error",
    [(wrong_shape_model, BadModelOutput), (int_output_model, BadModelOutput), (nan_model, BadModelOutput)],
    ids=["wrong_shape", "int_scores", "nan_scores"],
)
def test_invalid_output(sandbox: Sandbox, z: np.ndarray, make, error) -> None:  # type: ignore[no-untyped-def]
    pid = sandbox.pid
    with pytest.raises(error):
        run(sandbox, make(), z)
    assert_recovers(sandbox, z)
    assert sandbox.pid == pid  # a bad output does not cost the warm worker


@pytest.mark.timeout(60)
@pytest.mark.parametrize("declared", [(TensorProto.FLOAT, [None, C + 1]), (TensorProto.FLOAT, [None, C, 1]),
                                      (TensorProto.FLOAT, [None])], ids=["one_class_too_many", "rank_3", "rank_1"])
def test_invalid_declared_scores_are_refused_before_the_model_runs(sandbox: Sandbox, z: np.ndarray, declared) -> None:  # type: ignore[no-untyped-def]
    """The model would loop until the wall limit kills it (ModelTimeout); refused for its declared
    output instead, it never ran, and the warm worker survives."""
    pid = sandbox.pid
    with pytest.raises(BadModelOutput, match="declares scores"):
        run(sandbox, forever_model(declared), z, wall_seconds=20.0)
    assert sandbox.pid == pid
    assert_recovers(sandbox, z)


@pytest.mark.timeout(60)
def test_invalid_model_input_that_does_not_take_the_problem_inputs(sandbox: Sandbox) -> None:
    """A float model on a problem of uint8 8x8 images is refused for its declared input."""
    images = np.random.default_rng(2).integers(0, 256, (N, 8, 8), dtype=np.uint8)
    with pytest.raises(BadModel, match=r"model takes tensor\(float\)\[None, 64\], the problem's inputs are "
                                       r"tensor\(uint8\)\['N', 8, 8\]"):
        sandbox.run(good_model(), [(b"i" * 32, images)], num_classes=C, max_model_bytes=MAX_BYTES)


def test_signature_check_accepts_symbolic_and_unknown_dims() -> None:
    z8 = np.zeros((5, 8, 8), np.uint8)
    assert signature_mismatch("tensor(uint8)", ["batch", 8, 8], "tensor(float)", [None, C], z8, C) is None
    assert signature_mismatch("tensor(uint8)", [], "tensor(double)", [], z8, C) is None  # unknown ranks
    assert signature_mismatch("tensor(uint8)", [5, 8, 8], "tensor(float)", [5, C], z8, C) is None
    assert signature_mismatch("tensor(uint8)", [1, 8, 8], "tensor(float)", [None, C], z8, C)[0] == "bad_model"
    assert signature_mismatch("tensor(uint8)", [None, 64], "tensor(float)", [None, C], z8, C)[0] == "bad_model"
    assert signature_mismatch("tensor(uint8)", [None, 8, 8], "tensor(float)", [None, C, 1], z8, C)[0] == "bad_output"


@pytest.mark.timeout(60)
@pytest.mark.parametrize("model", [b"\x08\x07 not an onnx model" * 10, external_data_model()], ids=["garbage", "external_data"])
def test_invalid_model_bytes_are_a_bad_model(sandbox: Sandbox, z: np.ndarray, model: bytes) -> None:
    with pytest.raises(BadModel):
        run(sandbox, model, z)
    assert_recovers(sandbox, z)


@pytest.mark.timeout(60)
def test_invalid_worker_killed_mid_run_is_a_crash(sandbox: Sandbox, z: np.ndarray) -> None:
    pid = sandbox.pid
    assert pid is not None
    killer = threading.Timer(0.5, os.kill, (pid, signal.SIGSEGV))
    killer.start()
    try:
        with pytest.raises(ModelCrashed, match="SIGSEGV"):
            run(sandbox, forever_model(), z, wall_seconds=20.0)
    finally:
        killer.cancel()
    assert_recovers(sandbox, z)


def test_errors_are_daimon_errors() -> None:
    for cls in (ModelTooLarge, ModelTimeout, ModelMemoryError, ModelCrashed, BadModel, BadModelOutput):
        assert issubclass(cls, SandboxError) and issubclass(cls, DaimonError)


def test_invalid_frames_are_refused_not_unpickled() -> None:
    with pytest.raises(ValueError, match="not allowed"):
        array_from_blob({"dtype": "object", "shape": [1]}, b"\x80\x04K\x01.")
    with pytest.raises(ValueError, match="do not hold"):
        array_from_blob({"dtype": "float32", "shape": [2, 2]}, b"\x00" * 12)
    arr = array_from_blob({"dtype": "float32", "shape": [2, 2]}, np.arange(4, dtype=np.float32).tobytes())
    assert arr.tolist() == [[0, 1], [2, 3]]


# ---------------------------------------------------------------------------
# Warm sessions (a runner's Sandbox.infer)
# ---------------------------------------------------------------------------
def digest(model: bytes) -> bytes:
    import hashlib

    return hashlib.sha256(model).digest()


@pytest.mark.timeout(60)
def test_warm_session_is_built_once_per_model(sandbox: Sandbox, z: np.ndarray) -> None:
    model = good_model()
    first = sandbox.infer(digest(model), model, z, num_classes=C, max_model_bytes=MAX_BYTES)
    pid = sandbox.pid
    second = sandbox.infer(digest(model), model, z[:3], num_classes=C, max_model_bytes=MAX_BYTES)
    assert sandbox.sessions_loaded == 1  # the second call sent only its inputs
    assert sandbox.pid == pid
    np.testing.assert_array_equal(first[:3], second)
    np.testing.assert_array_equal(first, run(sandbox, model, z)[0])  # the same scores as a one-off run
    other = good_model(seed=1)
    sandbox.infer(digest(other), other, z, num_classes=C, max_model_bytes=MAX_BYTES)
    assert sandbox.sessions_loaded == 2  # one session per digest


@pytest.mark.timeout(60)
def test_warm_sessions_are_bounded(sandbox: Sandbox, z: np.ndarray) -> None:
    from daimon_node.proofs.sandbox_wire import MAX_SESSIONS

    models = [good_model(seed=s) for s in range(MAX_SESSIONS + 1)]
    for model in models:  # one more than the worker keeps: the oldest is evicted
        sandbox.infer(digest(model), model, z[:2], num_classes=C, max_model_bytes=MAX_BYTES)
    sandbox.infer(digest(models[-1]), models[-1], z[:2], num_classes=C, max_model_bytes=MAX_BYTES)
    assert sandbox.sessions_loaded == MAX_SESSIONS + 1
    sandbox.infer(digest(models[0]), models[0], z[:2], num_classes=C, max_model_bytes=MAX_BYTES)
    assert sandbox.sessions_loaded == MAX_SESSIONS + 2  # the evicted one is loaded again


@pytest.mark.timeout(60)
def test_crashed_warm_worker_is_replaced(sandbox: Sandbox, z: np.ndarray) -> None:
    model = good_model()
    before = sandbox.infer(digest(model), model, z, num_classes=C, max_model_bytes=MAX_BYTES)
    pid = sandbox.pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)  # the worker dies between calls
    with pytest.raises(ModelCrashed, match="SIGKILL"):
        sandbox.infer(digest(model), model, z, num_classes=C, max_model_bytes=MAX_BYTES)
    after = sandbox.infer(digest(model), model, z, num_classes=C, max_model_bytes=MAX_BYTES)
    assert sandbox.pid not in (None, pid) and sandbox.restarts == 1
    assert sandbox.sessions_loaded == 2  # the new worker built the session again
    np.testing.assert_array_equal(before, after)


@pytest.mark.timeout(60)
def test_warm_model_that_times_out_is_replaced(sandbox: Sandbox, z: np.ndarray) -> None:
    slow = forever_model((TensorProto.FLOAT, [None, C]))
    t0 = time.monotonic()
    with pytest.raises(ModelTimeout):
        sandbox.infer(digest(slow), slow, z, num_classes=C, max_model_bytes=MAX_BYTES, wall_seconds=1.5)
    assert time.monotonic() - t0 < 10
    model = good_model()
    assert sandbox.infer(digest(model), model, z, num_classes=C, max_model_bytes=MAX_BYTES).shape == (N, C)
    assert sandbox.restarts == 1


@pytest.mark.timeout(60)
def test_warm_session_checks_signature_and_outputs(sandbox: Sandbox, z: np.ndarray) -> None:
    bad = wrong_shape_model()
    with pytest.raises(BadModelOutput):
        sandbox.infer(digest(bad), bad, z, num_classes=C, max_model_bytes=MAX_BYTES)
    images = np.zeros((N, 8, 8), np.uint8)
    model = good_model()
    with pytest.raises(BadModel, match="model takes"):
        sandbox.infer(digest(model), model, images, num_classes=C, max_model_bytes=MAX_BYTES)
    with pytest.raises(ModelTooLarge):
        sandbox.infer(digest(model), model, z, num_classes=C, max_model_bytes=len(model) - 1)


@pytest.mark.timeout(60)
def test_warm_session_from_trio_without_a_thread(sandbox: Sandbox, z: np.ndarray) -> None:
    """``infer_async`` gives ``infer``'s scores; a crash, a deadline and a cancellation each leave a
    worker that the next call replaces."""
    import trio

    model, slow = good_model(), forever_model((TensorProto.FLOAT, [None, C]))

    async def calls() -> None:
        kw = dict(num_classes=C, max_model_bytes=MAX_BYTES)
        expected = sandbox.infer(digest(model), model, z, **kw)
        np.testing.assert_array_equal(await sandbox.infer_async(digest(model), model, z, **kw), expected)
        assert sandbox.sessions_loaded == 1
        os.kill(sandbox.pid, signal.SIGKILL)  # type: ignore[arg-type]
        with pytest.raises(ModelCrashed):
            await sandbox.infer_async(digest(model), model, z, **kw)
        with pytest.raises(ModelTimeout):
            await sandbox.infer_async(digest(slow), slow, z, wall_seconds=1.5, **kw)
        with trio.move_on_after(1.0):  # the caller gives up first: the busy worker is killed
            await sandbox.infer_async(digest(slow), slow, z, wall_seconds=20.0, **kw)
        assert sandbox.pid is None
        np.testing.assert_array_equal(await sandbox.infer_async(digest(model), model, z, **kw), expected)

    trio.run(calls)
    assert sandbox.restarts == 3  # after the kill, the deadline and the cancellation


def tiled_model(repeats: int) -> bytes:
    """Scores ``max(x_i) + b``, through a per-row intermediate of ``F * repeats`` floats (Tile): the memory
    a run needs grows with the number of rows onnxruntime sees at once, as a CNN's activations do."""
    reps = numpy_helper.from_array(np.array([1, repeats], np.int64), "reps")
    bias = numpy_helper.from_array(np.arange(C, dtype=np.float32)[None, :], "b")
    return _model(
        [helper.make_node("Tile", ["x", "reps"], ["t"]), helper.make_node("ReduceMax", ["t"], ["mx"], axes=[1]),
         helper.make_node("Add", ["mx", "b"], ["y"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, C])], [reps, bias])


@pytest.mark.timeout(120)
def test_a_large_input_set_runs_in_batches_within_the_memory_limit() -> None:
    """FashionMNIST scale (m = 10,000 plus two holdout sets of 5,000) through a model whose activations
    for all rows at once (rows * F * repeats * 4 bytes, 1.3 GB) exceed the worker's 1 GiB address space,
    while one batch of RUN_BATCH_ROWS rows needs 1/20 of it: the run must succeed, with every row's scores."""
    from daimon_node.proofs.sandbox_worker import RUN_BATCH_ROWS

    rows, repeats, limit = 20_000, 256, 1 << 30
    assert rows * F * repeats * 4 > limit and RUN_BATCH_ROWS * F * repeats * 4 * 8 < limit
    big = np.random.default_rng(2).uniform(0, 16, (rows, F)).astype(np.float32)
    with Sandbox(SandboxLimits(memory_bytes=limit, wall_seconds=30.0, startup_seconds=60.0)) as sb:
        (scores,) = run(sb, tiled_model(repeats), big)
    np.testing.assert_array_equal(scores, big.max(axis=1, keepdims=True) + np.arange(C, dtype=np.float32))
