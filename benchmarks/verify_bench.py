"""VERIFY wall time against bare onnxruntime + f_int, on all of digits (docs/design.md §7, issue 6).

Z is the whole digits set (1,797 images, the largest real input set available
offline); the DEL is the kit's 256-dim random-projection DEL for m = 1,797.
For each example model, in the same run and interleaved (so a busy machine
slows both alike):

- **bare**: what a validator would do with no sandbox and no checks:
  ``InferenceSession`` from the model bytes (CPU provider, one thread), one run
  over Z, argmax, ``f_int``. The session is built each time because VERIFY
  meets each model once.
- **VERIFY**: ``daimon_node.proofs.poi.verify`` on a warm sandbox worker: signature,
  size and digest checks, the run in the child process (model bytes over the
  pipe; Z already cached there), tie checks, ``labels_hash``, ``f_int``, the
  distance check and signing the vote.

The worker's cold start (spawn plus importing onnxruntime) and the first
VERIFY on a fresh worker (which also uploads Z) are printed apart.

    .venv/bin/python benchmarks/verify_bench.py [--repeats 30]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from chain.constants import ZERO_HASH  # noqa: E402
from chain.crypto import KeyPair  # noqa: E402
from daimon_node.harness.examples import train_example  # noqa: E402
from daimon_node.proofs.poi import prove, verify  # noqa: E402
from daimon_node.proofs.problem_kit import create_problem  # noqa: E402
from daimon_node.proofs.splits import load_dataset, split_dataset
from daimon_node.proofs.problem_params import ProblemOptions
from daimon_node.proofs.sandbox import Sandbox  # noqa: E402
from del_embed.integer import f_int  # noqa: E402


def bare_verify(model: bytes, z: np.ndarray, del_model) -> tuple[int, ...]:  # type: ignore[no-untyped-def]
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(model, sess_options=opts, providers=["CPUExecutionProvider"])
    (scores,) = sess.run([sess.get_outputs()[0].name], {sess.get_inputs()[0].name: z})
    return f_int(del_model, np.argmax(scores, axis=1))


def ms(xs: list[float]) -> str:
    return f"{statistics.median(xs) * 1e3:8.2f} ms (min {min(xs) * 1e3:.2f})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=30)
    args = ap.parse_args()

    ds = load_dataset("digits")
    train = split_dataset(ds)  # the examples learn on the default train split only
    creator, improver, validator = (KeyPair.from_label(n) for n in ("bench-creator", "bench-improver", "bench-validator"))
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        made = create_problem(Path(tmp) / "all-digits", creator, dataset=ds, test_fraction=1.0,
                              opts=ProblemOptions(t0=1_700_000_000))
        problem = made.problem
        print(f"problem: m = {problem.tuples[0].m} (all of digits), DEL n = {problem.dels[0].n}, "
              f"hidden = {problem.dels[0].hidden}; built in {time.perf_counter() - t:.1f} s")
        print(f"machine: {os.cpu_count()} CPUs visible, load average {os.getloadavg()[0]:.1f}")
        z = problem.z[0]
        models = {name: train_example(name, train.train_x, train.train_y, 10).onnx_bytes for name in ("linear", "mlp")}

        sandbox = Sandbox()
        cold = sandbox.start()
        print(f"sandbox cold start (spawn + import onnxruntime): {cold * 1e3:.0f} ms")
        proofs = {n: prove(m, problem, improver, period=1, parent=ZERO_HASH, sandbox=sandbox) for n, m in models.items()}
        sandbox.close()
        sandbox = Sandbox()
        sandbox.start()
        t = time.perf_counter()
        verify(proofs["linear"].poi, models["linear"], problem, validator, sandbox=sandbox)
        print(f"first VERIFY on a fresh worker (uploads Z once): {(time.perf_counter() - t) * 1e3:.2f} ms")

        f_times = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            f_int(problem.dels[0], np.zeros(problem.tuples[0].m, np.int64))
            f_times.append(time.perf_counter() - t)
        print(f"f_int alone: {ms(f_times)}")
        print()
        print(f"{'model':8} {'bytes':>7} {'bare ORT + f_int':>28} {'warm VERIFY':>28} {'ratio':>6}")
        for name, model in models.items():
            poi = proofs[name].poi
            bare, ver = [], []
            for _ in range(args.repeats):
                t = time.perf_counter()
                y = bare_verify(model, z, problem.dels[0])
                bare.append(time.perf_counter() - t)
                t = time.perf_counter()
                verdict = verify(poi, model, problem, validator, sandbox=sandbox)
                ver.append(time.perf_counter() - t)
            assert y == poi.ys[0] and verdict.distances == proofs[name].distances
            ratio = statistics.median(ver) / statistics.median(bare)
            print(f"{name:8} {len(model):7d} {ms(bare):>28} {ms(ver):>28} {ratio:6.2f}x")
        sandbox.close()
    print()
    print("target: warm VERIFY <= 1.3x bare (medians)")


if __name__ == "__main__":
    main()
