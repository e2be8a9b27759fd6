"""The sandbox's worker child: limits first, then requests from its parent until stdin closes.

Runs as ``python -c ... worker_main()`` in an empty temporary directory (``Sandbox`` starts
it). Requests (``sandbox_wire`` framing), each answered with one message:

- ``put`` / ``clear``: keep or drop input arrays (a problem's ``Z``) under a key;
- ``run``: load the model in the blob, check its signature, score the named inputs (one
  session per run: verification sees a different model every time);
- ``load``: build a session from the model in the blob and keep it warm under ``key``
  (the model's digest), evicting ``drop`` first; at most ``MAX_SESSIONS`` are kept;
- ``infer``: score the input array in the blob with the warm session ``key``.

Every failure of a model becomes a typed reply (``kind``: memory, bad_model, bad_output);
a run past its CPU budget dies of SIGXCPU, which the parent reports.
"""

from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import dataclass
from typing import Any, BinaryIO, Sequence

import numpy as np

from daimon_node.proofs.sandbox_wire import (
    LEN,
    MAX_SESSIONS,
    ONNX_SCORE_TYPES,
    ONNX_TENSOR_TYPES,
    PIPE_BYTES,
    SCORE_DTYPES,
    array_from_blob,
    array_header,
    encode_message,
    widen_pipe,
)

Reply = tuple[dict[str, Any], list[memoryview]]


def _read_exact(stream: BinaryIO, n: int) -> bytes | None:
    buf = bytearray()
    while len(buf) < n:
        chunk = stream.read(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


def _read_message(stream: BinaryIO) -> tuple[dict[str, Any], list[bytes]] | None:
    import json

    raw = _read_exact(stream, LEN.size)
    if raw is None:
        return None
    (length,) = LEN.unpack(raw)
    head = _read_exact(stream, length)
    if head is None:
        return None
    header = json.loads(head)
    blobs = []
    for size in header["blobs"]:
        blob = _read_exact(stream, int(size))
        if blob is None:
            return None
        blobs.append(blob)
    return header, blobs


def _write_message(fd: int, header: dict[str, Any], blobs: Sequence[bytes | memoryview] = ()) -> None:
    """One write per message: the parent wakes once, not once per piece."""
    view = memoryview(b"".join(encode_message(header, blobs)))
    while view.nbytes:
        view = view[os.write(fd, view):]


def _set_cpu_budget(seconds: int) -> None:
    """Soft RLIMIT_CPU = CPU used so far + ``seconds``: each run gets its full budget."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    used = math.ceil(usage.ru_utime + usage.ru_stime)
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    soft = used + seconds
    if hard != resource.RLIM_INFINITY:
        soft = min(soft, hard)
    resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))


def _clear_cpu_budget() -> None:
    import resource

    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    resource.setrlimit(resource.RLIMIT_CPU, (hard, hard))


def _classify(exc: BaseException) -> str:
    text = str(exc).lower()
    if isinstance(exc, MemoryError) or "allocate" in text or "bad_alloc" in text or "out of memory" in text:
        return "memory"
    return "runtime"


def _failure(kind: str, msg: str) -> Reply:
    return {"ok": False, "kind": kind, "msg": msg}, []


def fixed_dims_differ(declared: Sequence[Any], actual: Sequence[int]) -> bool:
    """A declared shape (ints fixed, strings or None symbolic; ``[]`` unknown rank) that ``actual`` breaks."""
    if not declared:
        return False  # onnxruntime shows an unknown rank as [] (a scalar too; the run's output check catches it)
    return len(declared) != len(actual) or any(isinstance(d, int) and d != a for d, a in zip(declared, actual))


def signature_mismatch(in_type: str, in_shape: Sequence[Any], out_type: str, out_shape: Sequence[Any],
                       arr: np.ndarray, num_classes: int) -> tuple[str, str] | None:
    """Why a model's declared input or first output cannot fit a problem, before it runs.

    ``arr`` is one of the problem's input sets, which fits its ``InputSpec``
    (``problem_kit.check_inputs``); the model must take that dtype and shape
    and declare float scores of shape ``(N, num_classes)``. Returns the
    refusal's kind and message, or None.
    """
    wanted = ONNX_TENSOR_TYPES.get(str(arr.dtype))
    if in_type != wanted or fixed_dims_differ(in_shape, arr.shape):
        return "bad_model", (f"model takes {in_type}{list(in_shape)}, the problem's inputs are "
                             f"{wanted}{['N', *arr.shape[1:]]}")
    if out_type not in ONNX_SCORE_TYPES or fixed_dims_differ(out_shape, (arr.shape[0], num_classes)):
        return "bad_output", (f"model declares scores {out_type}{list(out_shape)}, the problem needs "
                              f"tensor(float or double)[N, {num_classes}]")
    return None


@dataclass
class _Session:
    """A loaded model with its declared signature (read once, checked against every input)."""

    session: Any
    in_name: str
    in_type: str
    in_shape: list[Any]
    out_name: str
    out_type: str
    out_shape: list[Any]

    def mismatch(self, arr: np.ndarray, num_classes: int) -> tuple[str, str] | None:
        return signature_mismatch(self.in_type, self.in_shape, self.out_type, self.out_shape, arr, num_classes)


def _load(ort: Any, model: bytes) -> _Session | Reply:
    """Build a one-thread CPU session from ``model``; a typed failure reply if it cannot be."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.log_severity_level = 4
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
    try:
        session = ort.InferenceSession(model, sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises several unrelated types
        return _failure("memory" if _classify(exc) == "memory" else "bad_model", f"cannot load model: {exc}")
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if len(inputs) != 1:
        return _failure("bad_model", f"model has {len(inputs)} inputs, expected 1")
    if not outputs:
        return _failure("bad_model", "model has no outputs")
    return _Session(session, inputs[0].name, inputs[0].type, list(inputs[0].shape),
                    outputs[0].name, outputs[0].type, list(outputs[0].shape))


# Rows per onnxruntime call when the model's batch axis is not fixed (see ``run_batch_rows``).
RUN_BATCH_ROWS = 1024


def run_batch_rows(declared_shape: Sequence[Any]) -> int:
    """Rows per onnxruntime call: ``RUN_BATCH_ROWS`` when the model's first axis is free, else 0 (all at once).

    A model's activations grow with the rows it sees at once: a small CNN on all of a
    FashionMNIST-sized Z (10,000 images) asks for a 250 MB buffer and more than the worker's
    address space. In batches the memory a run needs depends on the model, not on m. The batch
    size is a constant, so prover and validators feed the model identical batches and get
    identical scores. A model that fixes its first axis is run on the whole set, as declared.
    """
    first = declared_shape[0] if declared_shape else None
    return 0 if isinstance(first, int) and first > 0 else RUN_BATCH_ROWS


def _score(loaded: _Session, arr: np.ndarray, num_classes: int) -> tuple[np.ndarray | None, Reply | None]:
    """Scores of one input array, in batches of ``run_batch_rows``; or a typed failure reply."""
    batch = run_batch_rows(loaded.in_shape) or max(1, arr.shape[0])
    parts = []
    for start in range(0, max(1, arr.shape[0]), batch):
        part, failed = _score_rows(loaded, arr[start:start + batch], num_classes)
        if failed is not None:
            return None, failed
        parts.append(part)
    return np.ascontiguousarray(parts[0] if len(parts) == 1 else np.concatenate(parts)), None


def _score_rows(loaded: _Session, arr: np.ndarray, num_classes: int) -> tuple[np.ndarray | None, Reply | None]:
    """Scores of one batch, checked for type and shape; or a typed failure reply."""
    try:
        (scores,) = loaded.session.run([loaded.out_name], {loaded.in_name: arr})
    except Exception as exc:  # onnxruntime raises several unrelated types
        kind = _classify(exc)
        return None, _failure(kind if kind == "memory" else "bad_model", f"inference failed: {exc}")
    if not isinstance(scores, np.ndarray):
        return None, _failure("bad_output", f"output is a {type(scores).__name__}, not a tensor")
    if str(scores.dtype) not in SCORE_DTYPES:
        return None, _failure("bad_output", f"scores must be float32 or float64, not {scores.dtype}")
    if scores.shape != (arr.shape[0], num_classes):
        return None, _failure("bad_output", f"scores have shape {list(scores.shape)}, expected "
                                            f"{[arr.shape[0], num_classes]}")
    return scores, None


def _score_all(loaded: _Session, arrays: list[np.ndarray], num_classes: int, t_start: float) -> Reply:
    """Check the signature against every input, then score each; one reply for all."""
    for arr in arrays:
        refusal = loaded.mismatch(arr, num_classes)
        if refusal is not None:
            return _failure(*refusal)
    metas: list[dict[str, Any]] = []
    blobs: list[memoryview] = []
    for arr in arrays:
        scores, failed = _score(loaded, arr, num_classes)
        if failed is not None:
            return failed
        assert scores is not None
        metas.append(array_header(scores))
        blobs.append(memoryview(scores).cast("B"))
    return {"ok": True, "outputs": metas, "seconds": time.perf_counter() - t_start}, blobs


class Worker:
    """The worker's state: cached inputs and warm sessions; one method per request op."""

    def __init__(self, ort: Any) -> None:
        self.ort = ort
        self.inputs: dict[str, np.ndarray] = {}
        self.sessions: dict[str, _Session] = {}

    def handle(self, header: dict[str, Any], blobs: list[bytes]) -> Reply:
        op = header.get("op")
        if op == "put":
            self.inputs[str(header["key"])] = array_from_blob(header, blobs[0])
            return {"ok": True}, []
        if op == "clear":
            self.inputs.clear()
            return {"ok": True}, []
        if op in ("run", "load", "infer"):
            _set_cpu_budget(int(header["cpu"]))
            try:
                return getattr(self, op)(header, blobs[0])  # type: ignore[no-any-return]
            except MemoryError as exc:
                return _failure("memory", f"out of memory: {exc}")
            finally:
                _clear_cpu_budget()
        return {"ok": False, "msg": f"unknown op {op!r}"}, []

    def run(self, header: dict[str, Any], model: bytes) -> Reply:
        t_start = time.perf_counter()
        loaded = _load(self.ort, model)
        if not isinstance(loaded, _Session):
            return loaded
        arrays = [self.inputs[k] for k in header["inputs"]]
        return _score_all(loaded, arrays, int(header["num_classes"]), t_start)

    def load(self, header: dict[str, Any], model: bytes) -> Reply:
        self.sessions.pop(str(header.get("drop")), None)
        loaded = _load(self.ort, model)
        if not isinstance(loaded, _Session):
            return loaded
        if len(self.sessions) >= MAX_SESSIONS:
            return {"ok": False, "msg": f"more than {MAX_SESSIONS} sessions"}, []
        self.sessions[str(header["key"])] = loaded
        return {"ok": True}, []

    def infer(self, header: dict[str, Any], blob: bytes) -> Reply:
        t_start = time.perf_counter()
        loaded = self.sessions.get(str(header["key"]))
        if loaded is None:
            return {"ok": False, "msg": "no such session"}, []
        arr = array_from_blob(header, blob)
        return _score_all(loaded, [arr], int(header["num_classes"]), t_start)


def worker_main() -> None:
    """Entry point of the worker child: limits first, then serve requests until stdin closes."""
    import resource

    memory = int(sys.argv[1])
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    # The protocol stream gets its own fd; fd 1 becomes stderr so C-level prints go nowhere harmful.
    out = os.dup(1)
    os.dup2(2, 1)
    widen_pipe(out)
    inp = os.fdopen(os.dup(0), "rb", buffering=PIPE_BYTES)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    try:
        import onnxruntime as ort

        ort.set_default_logger_severity(4)
    except Exception as exc:  # an import failure is reported, not hidden
        _write_message(out, {"ok": False, "op": "ready", "msg": f"cannot import onnxruntime: {exc}"})
        return
    _write_message(out, {"ok": True, "op": "ready", "pid": os.getpid()})
    worker = Worker(ort)
    while (msg := _read_message(inp)) is not None:
        _write_message(out, *worker.handle(*msg))
