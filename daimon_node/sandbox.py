"""Run untrusted ONNX models in a child process with hard limits (docs/design.md §7).

A validator runs whatever model a peer published. The model never runs in the
node's own process: a worker child (``python -c ... worker_main()``) loads it
with onnxruntime's CPU provider and one thread, under

- ``RLIMIT_AS`` (address space) set by the worker on itself before it reads
  any request, so a model that asks for 10 GB gets an allocation failure, not
  the machine's memory;
- ``RLIMIT_CPU`` whose soft limit the worker raises to "CPU used so far plus
  this run's budget" before each run, so a warm worker that served many runs
  still gives each run its full budget, and a run past it dies of SIGXCPU;
- a wall-time deadline enforced by the parent, which kills the worker on
  expiry (a model may also block without burning CPU);
- a size check against the problem's ``max_model_bytes`` before any byte of
  the model is sent;
- a check of the model's declared signature once it is loaded and before it
  runs: its input must take the problem's input dtype and shape, its first
  output must be float scores ``(N, num_classes)`` (``signature_mismatch``);
  the scores it returns are checked again after the run;
- batches of ``RUN_BATCH_ROWS`` rows when the model's first axis is free, so the
  memory a run needs follows the model, not the size of the input set (``batch_rows``).

Parent and worker speak over the worker's stdin/stdout with a small framing of
their own: a 4-byte big-endian length, a JSON header, then raw blobs whose
lengths the header lists. Arrays travel as raw bytes with a dtype (from an
allow-list) and a shape; nothing is ever pickled, so a hostile model cannot
smuggle objects into the node. The worker moves its protocol stream off fd 1
so stray C-library prints cannot corrupt the framing.

The worker runs in an empty temporary directory, so a model naming "external
data" files finds nothing to read (onnxruntime also refuses absolute and
escaping paths); it cannot register custom-op libraries.

One worker stays warm and serves many runs; inputs (a problem's ``Z``) are
uploaded once under a key and reused, so a verification sends only the model.
Its cold start (spawn plus importing onnxruntime) is measured apart
(``Sandbox.start`` returns it). After any failure the worker is killed if its
state is unknown and restarted on the next run; the node lives on.
"""

from __future__ import annotations

import json
import math
import os
import selectors
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Final, Sequence

import numpy as np

from .errors import DaimonError

# --- Limits and protocol constants -------------------------------------------------------
DEFAULT_MEMORY_BYTES: Final[int] = 1 << 30  # RLIMIT_AS of the worker
DEFAULT_WALL_SECONDS: Final[float] = 60.0  # one run: model load plus all inputs
DEFAULT_STARTUP_SECONDS: Final[float] = 60.0  # spawn plus imports (slow on a busy machine)
# Rows per onnxruntime call when the model's batch axis is not fixed (see ``score_rows``).
RUN_BATCH_ROWS: Final[int] = 1024
MAX_HEADER_BYTES: Final[int] = 1 << 16  # a JSON header is small; anything bigger is hostile
ALLOWED_DTYPES: Final[frozenset[str]] = frozenset({"float32", "float64", "int64", "int32", "uint8"})
SCORE_DTYPES: Final[frozenset[str]] = frozenset({"float32", "float64"})
ONNX_TENSOR_TYPES: Final[dict[str, str]] = {"float32": "tensor(float)", "float64": "tensor(double)",
                                            "int64": "tensor(int64)", "int32": "tensor(int32)", "uint8": "tensor(uint8)"}
ONNX_SCORE_TYPES: Final[frozenset[str]] = frozenset({"tensor(float)", "tensor(double)"})
PIPE_BYTES: Final[int] = 1 << 20  # requested pipe buffer (Linux default max)
MAX_CACHED_INPUTS: Final[int] = 16  # input arrays a worker keeps; more resets the cache
_LEN = struct.Struct(">I")
_PROJECT_ROOT: Final[str] = str(Path(__file__).resolve().parent.parent)


# --- Errors --------------------------------------------------------------------------------
class SandboxError(DaimonError):
    """Base of every failure to run an untrusted model; the node survives all of them."""


class ModelTooLarge(SandboxError):
    """The model file exceeds the problem's ``max_model_bytes``; it was never loaded."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"model is {size} bytes, over the problem's limit of {limit}")
        self.size = size
        self.limit = limit


class ModelTimeout(SandboxError):
    """The model ran past its wall-time or CPU-time budget and its worker was killed."""


class ModelMemoryError(SandboxError):
    """The model tried to allocate more memory than the worker's address-space limit."""


class ModelCrashed(SandboxError):
    """The worker died (signal or abort) while loading or running the model."""


class BadModel(SandboxError):
    """The bytes are not a loadable ONNX model with one input of the problem's type."""


class BadModelOutput(SandboxError):
    """The model's score tensor has the wrong shape or dtype, or holds non-finite values."""


class SandboxUnavailable(SandboxError):
    """The worker could not be started or spoke out of protocol."""


@dataclass(frozen=True)
class SandboxLimits:
    """Resource limits of one worker and of each run on it."""

    memory_bytes: int = DEFAULT_MEMORY_BYTES
    wall_seconds: float = DEFAULT_WALL_SECONDS
    cpu_seconds: float | None = None  # None: the wall budget, rounded up
    startup_seconds: float = DEFAULT_STARTUP_SECONDS

    @property
    def cpu_budget(self) -> int:
        """Whole seconds of CPU a run may use (RLIMIT_CPU has one-second resolution)."""
        return max(1, math.ceil(self.cpu_seconds if self.cpu_seconds is not None else self.wall_seconds))


# --- Framing (shared by both sides) -----------------------------------------------------
def encode_message(header: dict[str, Any], blobs: Sequence[bytes | memoryview] = ()) -> list[bytes | memoryview]:
    """One message as a list of buffers: length, JSON header (listing blob sizes), blobs."""
    head = dict(header)
    head["blobs"] = [len(b) if isinstance(b, bytes) else b.nbytes for b in blobs]
    raw = json.dumps(head, separators=(",", ":")).encode()
    return [_LEN.pack(len(raw)), raw, *blobs]


def array_header(arr: np.ndarray) -> dict[str, Any]:
    return {"dtype": str(arr.dtype), "shape": list(arr.shape)}


def array_from_blob(meta: dict[str, Any], blob: bytes) -> np.ndarray:
    """Rebuild an array from raw bytes, checking dtype and size (never unpickles)."""
    dtype = meta.get("dtype")
    shape = meta.get("shape")
    if dtype not in ALLOWED_DTYPES:
        raise ValueError(f"dtype {dtype!r} not allowed")
    if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape) or len(shape) > 8:
        raise ValueError(f"bad shape {shape!r}")
    dt = np.dtype(dtype)
    if math.prod(shape) * dt.itemsize != len(blob):
        raise ValueError(f"{len(blob)} bytes do not hold {dtype}{shape}")
    return np.frombuffer(blob, dtype=dt).reshape(shape)


def _widen_pipe(fd: int) -> None:
    """Grow a pipe's buffer (Linux) so a score tensor passes in one write, without a
    ping-pong of 64 KiB chunks that costs a context switch each on a busy machine."""
    import fcntl

    setter = getattr(fcntl, "F_SETPIPE_SZ", None)
    if setter is None:
        return
    try:
        fcntl.fcntl(fd, setter, PIPE_BYTES)
    except OSError:
        pass  # above /proc/sys/fs/pipe-max-size: the default size still works, only slower


# --- Parent side -----------------------------------------------------------------------------
class Sandbox:
    """A warm worker process that runs untrusted ONNX models under limits.

    Not thread-safe by design of the pipe; a lock serialises callers.
    """

    def __init__(self, limits: SandboxLimits | None = None, *, debug_stderr: bool = False) -> None:
        self.limits = limits or SandboxLimits()
        self._debug_stderr = debug_stderr
        self._proc: subprocess.Popen[bytes] | None = None
        self._cwd: tempfile.TemporaryDirectory[str] | None = None
        self._cached: set[str] = set()
        self._recv = bytearray()  # bytes read from the worker beyond the current message
        self._lock = threading.Lock()
        self.cold_start_seconds: float | None = None
        self.restarts = 0  # workers started after the first
        self.last_run_seconds: float | None = None  # load + inference time inside the worker, as it reports

    # lifecycle -----------------------------------------------------------------------------
    def __enter__(self) -> "Sandbox":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    def start(self) -> float:
        """Start the worker if it is not running; return its cold-start seconds (0 if warm)."""
        with self._lock:
            return self._ensure_started()

    def close(self) -> None:
        """Stop the worker (closing its stdin ends it; a kill follows if it lingers)."""
        with self._lock:
            self._stop(graceful=True)

    def _ensure_started(self) -> float:
        if self._proc is not None and self._proc.poll() is None:
            return 0.0
        if self._proc is not None:
            self._stop(graceful=False)
        if self.cold_start_seconds is not None:
            self.restarts += 1  # an earlier worker died or was killed
        t0 = time.perf_counter()
        self._cwd = tempfile.TemporaryDirectory(prefix="daimon-sandbox-")
        code = f"import sys; sys.path.insert(0, {_PROJECT_ROOT!r}); from daimon_node.sandbox import worker_main; worker_main()"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OMP_", "ORT_", "PYTHONPATH"))}
        env.update({"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"})
        args = [sys.executable, "-c", code, str(self.limits.memory_bytes)]
        try:
            self._proc = subprocess.Popen(
                args,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=None if self._debug_stderr else subprocess.DEVNULL,
                cwd=self._cwd.name,
                env=env,
                close_fds=True,
                start_new_session=True,  # a kill reaches only the worker, never the node's group
            )
        except OSError as exc:
            raise SandboxUnavailable(f"cannot start the sandbox worker: {exc}") from None
        assert self._proc.stdin is not None and self._proc.stdout is not None
        for stream in (self._proc.stdin, self._proc.stdout):
            _widen_pipe(stream.fileno())
        self._cached = set()
        try:
            reply, _ = self._read_message(time.monotonic() + self.limits.startup_seconds, max_blob=0)
        except SandboxError as exc:
            self._stop(graceful=False)
            raise SandboxUnavailable(f"sandbox worker failed to start: {exc}") from None
        if reply.get("ok") is not True or reply.get("op") != "ready":
            self._stop(graceful=False)
            raise SandboxUnavailable(f"sandbox worker failed to start: {reply.get('msg', reply)}")
        self.cold_start_seconds = time.perf_counter() - t0
        return self.cold_start_seconds

    def _stop(self, *, graceful: bool) -> None:
        proc, self._proc = self._proc, None
        self._cached = set()
        self._recv = bytearray()
        if proc is not None:
            if graceful and proc.poll() is None and proc.stdin is not None:
                try:
                    proc.stdin.close()
                    proc.wait(timeout=2.0)
                except (OSError, subprocess.TimeoutExpired):
                    pass
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10.0)
            for stream in (proc.stdin, proc.stdout):
                if stream is not None:
                    try:
                        stream.close()
                    except OSError:
                        pass
        if self._cwd is not None:
            self._cwd.cleanup()
            self._cwd = None

    # runs ------------------------------------------------------------------------------------
    def run(
        self,
        model: bytes,
        inputs: Sequence[tuple[bytes, np.ndarray]],
        *,
        num_classes: int,
        max_model_bytes: int,
        wall_seconds: float | None = None,
    ) -> list[np.ndarray]:
        """Scores of ``model`` on each input: one ``(N_i, num_classes)`` float array per input.

        ``inputs`` pairs a key (e.g. the content id of ``Z``) with its array; a
        key the worker already holds is not sent again. Raises a ``SandboxError``
        subclass on any failure; the worker is restarted on the next call if it died.
        """
        if len(model) > max_model_bytes:
            raise ModelTooLarge(len(model), max_model_bytes)
        wall = self.limits.wall_seconds if wall_seconds is None else wall_seconds
        with self._lock:
            self._ensure_started()
            for key, arr in inputs:
                self._put_input(key.hex(), arr)
            header = {
                "op": "run",
                "inputs": [key.hex() for key, _ in inputs],
                "num_classes": num_classes,
                "cpu": self.limits.cpu_budget if wall_seconds is None else max(1, math.ceil(wall)),
            }
            deadline = time.monotonic() + wall
            expected = [(int(arr.shape[0]), num_classes) for _, arr in inputs]
            max_blob = max((n * c * 8 for n, c in expected), default=0)
            self._send(encode_message(header, [model]), deadline)
            reply, blobs = self._read_message(deadline, max_blob=max_blob)
            seconds = reply.get("seconds")
            self.last_run_seconds = float(seconds) if isinstance(seconds, (int, float)) else None
            return self._scores_from_reply(reply, blobs, expected)

    def _put_input(self, key: str, arr: np.ndarray) -> None:
        if key in self._cached:
            return
        if len(self._cached) >= MAX_CACHED_INPUTS:
            self._request({"op": "clear"}, [], 0)
            self._cached = set()
        arr = np.ascontiguousarray(arr)
        if str(arr.dtype) not in ALLOWED_DTYPES:
            raise BadModel(f"input dtype {arr.dtype} not supported")
        self._request({"op": "put", "key": key, **array_header(arr)}, [memoryview(arr).cast("B")], 0)
        self._cached.add(key)

    def _request(self, header: dict[str, Any], blobs: Sequence[bytes | memoryview], max_blob: int) -> dict[str, Any]:
        deadline = time.monotonic() + self.limits.startup_seconds
        self._send(encode_message(header, blobs), deadline)
        reply, _ = self._read_message(deadline, max_blob=max_blob)
        if reply.get("ok") is not True:
            self._stop(graceful=False)
            raise SandboxUnavailable(f"sandbox worker refused {header['op']}: {reply.get('msg')}")
        return reply

    def _scores_from_reply(
        self, reply: dict[str, Any], blobs: list[bytes], expected: list[tuple[int, int]]
    ) -> list[np.ndarray]:
        if reply.get("ok") is not True:
            kind, msg = reply.get("kind"), str(reply.get("msg", ""))[:500]
            error = {"memory": ModelMemoryError, "bad_model": BadModel, "bad_output": BadModelOutput}.get(
                str(kind), ModelCrashed
            )
            raise error(msg)
        metas = reply.get("outputs")
        if not isinstance(metas, list) or len(metas) != len(expected) or len(blobs) != len(expected):
            self._stop(graceful=False)
            raise SandboxUnavailable("sandbox worker replied with the wrong number of outputs")
        out = []
        for meta, blob, shape in zip(metas, blobs, expected):
            if not isinstance(meta, dict) or meta.get("dtype") not in SCORE_DTYPES:
                raise BadModelOutput(f"scores must be float32 or float64, not {meta.get('dtype') if isinstance(meta, dict) else meta!r}")
            if meta.get("shape") != list(shape):
                raise BadModelOutput(f"scores have shape {meta.get('shape')}, expected {list(shape)}")
            try:
                scores = array_from_blob(meta, blob)
            except ValueError as exc:
                raise BadModelOutput(str(exc)) from None
            if not np.isfinite(scores).all():
                raise BadModelOutput("scores hold NaN or infinity")
            out.append(scores)
        return out

    # pipe I/O with deadlines ------------------------------------------------------------------
    def _send(self, buffers: list[bytes | memoryview], deadline: float) -> None:
        proc = self._proc
        assert proc is not None and proc.stdin is not None
        fd = proc.stdin.fileno()
        os.set_blocking(fd, False)
        # Joined into one buffer (a copy is cheaper than waking the worker once per piece).
        view = memoryview(b"".join(buffers))
        with selectors.DefaultSelector() as sel:
            sel.register(fd, selectors.EVENT_WRITE)
            while view.nbytes:
                try:
                    n = os.write(fd, view)
                except BlockingIOError:
                    if not sel.select(self._remaining(deadline)):
                        self._timeout()
                    continue
                except (BrokenPipeError, ConnectionResetError):
                    self._died()
                view = view[n:]

    def _read_message(self, deadline: float, *, max_blob: int) -> tuple[dict[str, Any], list[bytes]]:
        proc = self._proc
        assert proc is not None and proc.stdout is not None
        fd = proc.stdout.fileno()
        os.set_blocking(fd, False)
        with selectors.DefaultSelector() as sel:
            sel.register(fd, selectors.EVENT_READ)
            (length,) = _LEN.unpack(self._read_exact(sel, fd, _LEN.size, deadline))
            if length > MAX_HEADER_BYTES:
                self._stop(graceful=False)
                raise SandboxUnavailable(f"sandbox header of {length} bytes")
            try:
                header = json.loads(self._read_exact(sel, fd, length, deadline))
                sizes = header["blobs"]
                if not isinstance(header, dict) or not all(isinstance(s, int) and 0 <= s <= max_blob for s in sizes):
                    raise ValueError(f"blob sizes {sizes!r} over {max_blob}")
            except (ValueError, KeyError, TypeError) as exc:
                self._stop(graceful=False)
                raise SandboxUnavailable(f"sandbox worker spoke out of protocol: {exc}") from None
            blobs = [self._read_exact(sel, fd, size, deadline) for size in sizes]
        return header, blobs

    def _read_exact(self, sel: selectors.BaseSelector, fd: int, n: int, deadline: float) -> bytes:
        """``n`` bytes from the worker; reads as much as is there (one message is one write)."""
        buf = self._recv
        while len(buf) < n:
            try:
                chunk = os.read(fd, max(n - len(buf), PIPE_BYTES))
            except BlockingIOError:
                if not sel.select(self._remaining(deadline)):
                    self._timeout()
                continue
            if not chunk:
                self._died()
            buf += chunk
        out = bytes(buf[:n])
        del buf[:n]
        return out

    @staticmethod
    def _remaining(deadline: float) -> float:
        return max(0.0, deadline - time.monotonic())

    def _timeout(self) -> None:
        self._stop(graceful=False)
        raise ModelTimeout("model exceeded its wall-time limit; worker killed")

    def _died(self) -> None:
        proc = self._proc
        code = None
        if proc is not None:
            try:
                code = proc.wait(timeout=5.0)
            except subprocess.TimeoutExpired:
                code = None
        self._stop(graceful=False)
        if code == -signal.SIGXCPU:
            raise ModelTimeout("model exceeded its CPU-time limit; worker killed by SIGXCPU")
        if code is not None and code < 0:
            raise ModelCrashed(f"sandbox worker died of signal {signal.Signals(-code).name}")
        raise ModelCrashed(f"sandbox worker exited with status {code}")


# --- Worker side --------------------------------------------------------------------------------
def _worker_read_exact(stream: BinaryIO, n: int) -> bytes | None:
    buf = bytearray()
    while len(buf) < n:
        chunk = stream.read(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


def _worker_read(stream: BinaryIO) -> tuple[dict[str, Any], list[bytes]] | None:
    raw = _worker_read_exact(stream, _LEN.size)
    if raw is None:
        return None
    (length,) = _LEN.unpack(raw)
    head = _worker_read_exact(stream, length)
    if head is None:
        return None
    header = json.loads(head)
    blobs = []
    for size in header["blobs"]:
        blob = _worker_read_exact(stream, int(size))
        if blob is None:
            return None
        blobs.append(blob)
    return header, blobs


def _worker_write(fd: int, header: dict[str, Any], blobs: Sequence[bytes | memoryview] = ()) -> None:
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


def batch_rows(declared_shape: Sequence[Any]) -> int:
    """Rows per onnxruntime call: ``RUN_BATCH_ROWS`` when the model's first axis is free, else 0 (all at once).

    A model's activations grow with the rows it sees at once: a small CNN on all of a
    FashionMNIST-sized Z (10,000 images) asks for a 250 MB buffer and more than the worker's
    address space. In batches the memory a run needs depends on the model, not on m. The batch
    size is a constant, so prover and validators feed the model identical batches and get
    identical scores. A model that fixes its first axis is run on the whole set, as declared.
    """
    first = declared_shape[0] if declared_shape else None
    return 0 if isinstance(first, int) and first > 0 else RUN_BATCH_ROWS


def _worker_run(ort: Any, header: dict[str, Any], model: bytes, cache: dict[str, np.ndarray]) -> tuple[dict[str, Any], list[memoryview]]:
    """Load the model and score every requested input; errors become typed replies."""
    num_classes = int(header["num_classes"])
    arrays = [cache[k] for k in header["inputs"]]
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.log_severity_level = 4
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
    t_start = time.perf_counter()
    try:
        session = ort.InferenceSession(model, sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises several unrelated types
        kind = _classify(exc)
        return {"ok": False, "kind": "memory" if kind == "memory" else "bad_model", "msg": f"cannot load model: {exc}"}, []
    model_inputs = session.get_inputs()
    if len(model_inputs) != 1:
        return {"ok": False, "kind": "bad_model", "msg": f"model has {len(model_inputs)} inputs, expected 1"}, []
    outputs = session.get_outputs()
    if not outputs:
        return {"ok": False, "kind": "bad_model", "msg": "model has no outputs"}, []
    in_name, out_name = model_inputs[0].name, outputs[0].name
    for arr in arrays:
        refusal = signature_mismatch(model_inputs[0].type, model_inputs[0].shape, outputs[0].type,
                                     outputs[0].shape, arr, num_classes)
        if refusal is not None:
            return {"ok": False, "kind": refusal[0], "msg": refusal[1]}, []
    batch = batch_rows(model_inputs[0].shape)
    metas: list[dict[str, Any]] = []
    blobs: list[memoryview] = []
    for arr in arrays:
        parts = []
        for start in range(0, max(1, arr.shape[0]), batch or max(1, arr.shape[0])):
            rows = arr[start : start + batch] if batch else arr
            try:
                (part,) = session.run([out_name], {in_name: rows})
            except Exception as exc:
                kind = _classify(exc)
                return {"ok": False, "kind": kind if kind == "memory" else "bad_model", "msg": f"inference failed: {exc}"}, []
            if not isinstance(part, np.ndarray):
                return {"ok": False, "kind": "bad_output", "msg": f"output is a {type(part).__name__}, not a tensor"}, []
            if str(part.dtype) not in SCORE_DTYPES:
                return {"ok": False, "kind": "bad_output", "msg": f"scores must be float32 or float64, not {part.dtype}"}, []
            if part.shape != (rows.shape[0], num_classes):
                return {"ok": False, "kind": "bad_output", "msg": f"scores have shape {list(part.shape)}, expected {[rows.shape[0], num_classes]}"}, []
            parts.append(part)
        scores = np.ascontiguousarray(parts[0] if len(parts) == 1 else np.concatenate(parts))
        metas.append(array_header(scores))
        blobs.append(memoryview(scores).cast("B"))
    return {"ok": True, "outputs": metas, "seconds": time.perf_counter() - t_start}, blobs


def worker_main() -> None:
    """Entry point of the worker child: limits first, then serve requests until stdin closes."""
    import resource

    memory = int(sys.argv[1])
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    # The protocol stream gets its own fd; fd 1 becomes stderr so C-level prints go nowhere harmful.
    out = os.dup(1)
    os.dup2(2, 1)
    _widen_pipe(out)
    inp = os.fdopen(os.dup(0), "rb", buffering=PIPE_BYTES)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    try:
        import onnxruntime as ort

        ort.set_default_logger_severity(4)
    except Exception as exc:  # an import failure is reported, not hidden
        _worker_write(out, {"ok": False, "op": "ready", "msg": f"cannot import onnxruntime: {exc}"})
        return
    _worker_write(out, {"ok": True, "op": "ready", "pid": os.getpid()})
    cache: dict[str, np.ndarray] = {}
    while True:
        msg = _worker_read(inp)
        if msg is None:
            return
        header, blobs = msg
        op = header.get("op")
        if op == "put":
            cache[str(header["key"])] = array_from_blob(header, blobs[0])
            _worker_write(out, {"ok": True})
        elif op == "clear":
            cache.clear()
            _worker_write(out, {"ok": True})
        elif op == "run":
            _set_cpu_budget(int(header["cpu"]))
            try:
                reply, out_blobs = _worker_run(ort, header, blobs[0], cache)
            except MemoryError as exc:
                reply, out_blobs = {"ok": False, "kind": "memory", "msg": f"out of memory: {exc}"}, []
            finally:
                _clear_cpu_budget()
            _worker_write(out, reply, out_blobs)
        else:
            _worker_write(out, {"ok": False, "msg": f"unknown op {op!r}"})


__all__ = [
    "Sandbox",
    "SandboxLimits",
    "SandboxError",
    "ModelTooLarge",
    "ModelTimeout",
    "ModelMemoryError",
    "ModelCrashed",
    "BadModel",
    "BadModelOutput",
    "SandboxUnavailable",
]
