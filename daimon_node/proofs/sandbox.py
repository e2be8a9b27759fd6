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
  the scores it returns are checked again after the run.

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

A runner serving one model to many callers uses ``infer`` instead of ``run``: the
worker keeps an onnxruntime session per model digest (at most ``MAX_SESSIONS``,
oldest evicted), so a call sends only its inputs and does not rebuild the session
(docs/market.md). The session lives in the same worker under the same limits; a
worker that crashed or was killed for a deadline is replaced on the next call,
which loads the model again.

The worker's side is ``sandbox_worker.py``; the framing both use is ``sandbox_wire.py``.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, NoReturn, Sequence

import numpy as np
import trio

from daimon_node.errors import DaimonError
from daimon_node.proofs.sandbox_wire import (
    ALLOWED_DTYPES,
    DEFAULT_MEMORY_BYTES,
    DEFAULT_STARTUP_SECONDS,
    DEFAULT_WALL_SECONDS,
    MAX_CACHED_INPUTS,
    MAX_SESSIONS,
    SCORE_DTYPES,
    array_from_blob,
    array_header,
    encode_message,
    widen_pipe,
)
from daimon_node.proofs.sandbox_pipe import PipeClosed, PipeProtocolError, PipeTimeout, WorkerPipe
from daimon_node.proofs.sandbox_worker import signature_mismatch

_PROJECT_ROOT: Final[str] = str(Path(__file__).resolve().parents[2])


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
        self._sessions: OrderedDict[str, None] = OrderedDict()  # warm model digests in the worker, oldest first
        self._pipe: WorkerPipe | None = None
        self._lock = threading.Lock()
        self._trio_lock = trio.Lock()  # queues trio callers of infer_async before they take _lock
        self.sessions_loaded = 0  # warm sessions built (a replaced worker builds its sessions again)
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
        code = f"import sys; sys.path.insert(0, {_PROJECT_ROOT!r}); from daimon_node.proofs.sandbox_worker import worker_main; worker_main()"
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
            widen_pipe(stream.fileno())
        self._pipe = WorkerPipe(self._proc)
        self._cached = set()
        try:
            reply, _ = self._exchange(b"", time.monotonic() + self.limits.startup_seconds, max_blob=0)
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
        self._sessions = OrderedDict()
        self._pipe = None
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
            reply, blobs = self._exchange(_joined(header, [model]), deadline, max_blob)
            seconds = reply.get("seconds")
            self.last_run_seconds = float(seconds) if isinstance(seconds, (int, float)) else None
            return self._scores_from_reply(reply, blobs, expected)

    def infer(self, digest: bytes, model: bytes, inputs: np.ndarray, *, num_classes: int,
              max_model_bytes: int, wall_seconds: float | None = None) -> np.ndarray:
        """Scores ``(N, num_classes)`` of ``model`` (whose SHA-256 is ``digest``) on ``inputs``.

        The worker keeps the model's session warm under ``digest``: the model is sent and
        loaded only on the first call (and again after the worker was replaced). The wall
        and CPU budgets cover that load plus the run. Raises like ``run``.
        """
        call = self._warm_call(digest, model, inputs, num_classes, max_model_bytes, wall_seconds)
        with self._lock:
            self._ensure_started()
            deadline = time.monotonic() + call.wall
            if not self._is_warm(call.key):
                self._loaded(call.key, self._exchange(self._load_request(call), deadline, 0)[0])
            reply, blobs = self._exchange(call.request, deadline, call.max_blob)
            return self._scores_from_reply(reply, blobs, [call.shape])[0]

    async def infer_async(self, digest: bytes, model: bytes, inputs: np.ndarray, *, num_classes: int,
                          max_model_bytes: int, wall_seconds: float | None = None) -> np.ndarray:
        """``infer`` for a trio task: it waits on the worker's pipes in the event loop, so a call
        costs no hop through a thread (a cold start still runs in one). Cancelled mid-call,
        the worker is killed: its state is unknown."""
        call = self._warm_call(digest, model, inputs, num_classes, max_model_bytes, wall_seconds)
        async with self._trio_lock:
            if self.pid is None:
                await trio.to_thread.run_sync(self.start)
            if not self._lock.acquire(blocking=False):  # a thread is using the worker
                await trio.to_thread.run_sync(self._lock.acquire)
            try:
                self._ensure_started()  # a no-op unless the worker died since start()
                deadline = time.monotonic() + call.wall
                if not self._is_warm(call.key):
                    self._loaded(call.key, (await self._aexchange(self._load_request(call), deadline, 0))[0])
                reply, blobs = await self._aexchange(call.request, deadline, call.max_blob)
                return self._scores_from_reply(reply, blobs, [call.shape])[0]
            finally:
                self._lock.release()

    def _warm_call(self, digest: bytes, model: bytes, inputs: np.ndarray, num_classes: int,
                   max_model_bytes: int, wall_seconds: float | None) -> "_WarmCall":
        if len(model) > max_model_bytes:
            raise ModelTooLarge(len(model), max_model_bytes)
        arr = np.ascontiguousarray(inputs)
        if str(arr.dtype) not in ALLOWED_DTYPES:
            raise BadModel(f"input dtype {arr.dtype} not supported")
        wall = self.limits.wall_seconds if wall_seconds is None else wall_seconds
        cpu = self.limits.cpu_budget if wall_seconds is None else max(1, math.ceil(wall))
        key, rows = digest.hex(), int(arr.shape[0]) if arr.ndim else 0
        header = {"op": "infer", "key": key, "num_classes": num_classes, "cpu": cpu, **array_header(arr)}
        return _WarmCall(key, model, cpu, wall, _joined(header, [memoryview(arr).cast("B")]),
                         (rows, num_classes), rows * num_classes * 8)

    def _is_warm(self, key: str) -> bool:
        if key in self._sessions:
            self._sessions.move_to_end(key)
            return True
        return False

    def _load_request(self, call: "_WarmCall") -> bytes:
        """The ``load`` message of a session, evicting the oldest when the worker is full."""
        drop = next(iter(self._sessions)) if len(self._sessions) >= MAX_SESSIONS else None
        if drop is not None:
            del self._sessions[drop]
        return _joined({"op": "load", "key": call.key, "drop": drop, "cpu": call.cpu}, [call.model])

    def _loaded(self, key: str, reply: dict[str, Any]) -> None:
        if reply.get("ok") is not True:
            self._raise_model_failure(reply)
        self._sessions[key] = None
        self.sessions_loaded += 1

    def _raise_model_failure(self, reply: dict[str, Any]) -> NoReturn:
        """The typed error of a worker's failure reply; one without a kind is out of protocol."""
        kind, msg = reply.get("kind"), str(reply.get("msg", ""))[:500]
        error = {"memory": ModelMemoryError, "bad_model": BadModel, "bad_output": BadModelOutput}.get(str(kind))
        if error is not None:
            raise error(msg)
        self._stop(graceful=False)
        raise SandboxUnavailable(f"sandbox worker refused a request: {msg}")

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
        reply, _ = self._exchange(_joined(header, blobs), deadline, max_blob)
        if reply.get("ok") is not True:
            self._stop(graceful=False)
            raise SandboxUnavailable(f"sandbox worker refused {header['op']}: {reply.get('msg')}")
        return reply

    def _scores_from_reply(
        self, reply: dict[str, Any], blobs: list[bytes], expected: list[tuple[int, int]]
    ) -> list[np.ndarray]:
        if reply.get("ok") is not True:
            self._raise_model_failure(reply)
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
    @contextmanager
    def _pipe_failures(self) -> Iterator[None]:
        """A pipe failure as the sandbox's typed error (the worker killed or reaped first)."""
        try:
            yield
        except PipeTimeout:
            self._timeout()
        except PipeClosed:
            self._died()
        except PipeProtocolError as exc:
            self._stop(graceful=False)
            raise SandboxUnavailable(str(exc)) from None

    def _exchange(self, data: bytes, deadline: float, max_blob: int) -> tuple[dict[str, Any], list[bytes]]:
        """Send ``data`` (if any) and read the worker's reply, from a thread."""
        assert self._pipe is not None
        with self._pipe_failures():
            if data:
                self._pipe.send(data, deadline)
            return self._pipe.read_message(deadline, max_blob)

    async def _aexchange(self, data: bytes, deadline: float, max_blob: int) -> tuple[dict[str, Any], list[bytes]]:
        """``_exchange`` from a trio task; cancelled half-way, the worker is killed."""
        assert self._pipe is not None
        answered = False
        try:
            with self._pipe_failures():
                await self._pipe.asend(data, deadline)
                reply = await self._pipe.aread_message(deadline, max_blob)
            answered = True
            return reply
        finally:
            if not answered:
                self._stop(graceful=False)

    def _timeout(self) -> NoReturn:
        self._stop(graceful=False)
        raise ModelTimeout("model exceeded its wall-time limit; worker killed")

    def _died(self) -> NoReturn:
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



@dataclass(frozen=True)
class _WarmCall:
    """One ``infer`` call, prepared before the worker is touched."""

    key: str  # the model digest, hex
    model: bytes
    cpu: int
    wall: float
    request: bytes  # the ``infer`` message
    shape: tuple[int, int]  # of the scores
    max_blob: int


def _joined(header: dict[str, Any], blobs: Sequence[bytes | memoryview]) -> bytes:
    """A message as one buffer (a copy is cheaper than waking the worker once per piece)."""
    return b"".join(encode_message(header, blobs))


__all__ = [
    "Sandbox", "SandboxLimits", "SandboxError", "ModelTooLarge", "ModelTimeout", "ModelMemoryError", "ModelCrashed",
    "BadModel", "BadModelOutput", "SandboxUnavailable", "array_from_blob", "signature_mismatch",
]
