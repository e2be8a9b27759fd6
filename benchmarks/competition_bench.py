"""One competition at FashionMNIST scale, end to end through the real code paths (issue 16).

Data: synthetic 28x28 uint8 images (one smooth prototype per class, shifted and noised per
item) under real labels: FashionMNIST's 10,000 test labels and the first 10,000 of its train
labels, read from ``$DAIMON_DATASETS/fashion-mnist/`` or ``../shared/datasets/fashion-mnist/``
(``del_embed.data.fashion_mnist_test_labels``) when present, else uniform random labels. The
20,000 items are written as an IDX pair and split by ``problem create --images --labels`` into
m = 10,000 test items, one 5,000-item holdout and 5,000 training items.

Printed, with the targets and pass/fail:

- ``problem create`` wall time (a subprocess, as a user runs it) with ``--del random`` and
  with ``--del learned`` (its default training cap unless ``--learned-seconds``), and for each
  DEL: the consistency allowance r the kit measured, the 0.5pp ranking accuracy and MAE per
  error band (``del_embed.evaluate``, on ``f_int``), and how much of x_t the weights give away
  (``del_embed.attack.inspection_attack``; chance is 10%);
- PROVE and VERIFY wall time for a small CNN (torch, exported with ``torch.onnx.export``; built
  with the onnx helper, untrained, when torch is missing) on a warm sandbox, VERIFY interleaved
  with a bare-onnxruntime baseline in the same run (session from the model bytes, one thread and
  batches of ``RUN_BATCH_ROWS`` as in the sandbox, over Z and Z_h, argmax, ``f_int``; the same all
  at once is printed too);
- the PoI, reveal, season reveal, vote, proposal and largest-block bytes, the real ones and the
  largest the problem allows (``chain.limits``), against the gossip caps (``chain.constants``,
  ``p2p.gossip.MAX_RPC_BYTES``).

    .venv/bin/python benchmarks/competition_bench.py [--learned-seconds S | --no-learned] [--repeats N]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from chain import constants as C  # noqa: E402
from chain import limits  # noqa: E402
from chain.constants import ZERO_HASH  # noqa: E402
from chain.crypto import KeyPair  # noqa: E402
from daimon_node.keystore import init_data_dir  # noqa: E402
from daimon_node.proofs.poi import prove, verify  # noqa: E402
from daimon_node.proofs.problem_kit import Problem, load_problem, load_train_split  # noqa: E402
from daimon_node.proofs.sandbox import Sandbox  # noqa: E402
from daimon_node.proofs.sandbox_worker import RUN_BATCH_ROWS  # noqa: E402
from del_embed.data import fashion_mnist_test_labels, load_labels  # noqa: E402
from del_embed.integer import f_int  # noqa: E402
from p2p.gossip import MAX_RPC_BYTES  # noqa: E402

M_TEST = 10_000
M_HOLDOUT = 5_000
M_TRAIN = 5_000
SIDE = 28
NUM_CLASSES = 10
T0 = 1_700_000_000
CREATE_RANDOM_TARGET_S = 60.0
VERIFY_RATIO_TARGET = 1.3
# p2p.gossip refuses a topic cap within this many bytes of its RPC frame limit (room for framing).
RPC_FRAME_SLACK = 4096


# ---------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------
def real_labels() -> tuple[np.ndarray, str] | None:
    """FashionMNIST's test labels then the train labels, when both files are there."""
    test_path = fashion_mnist_test_labels()
    train_path = test_path.with_name("train-labels-idx1-ubyte.gz")
    if not (test_path.exists() and train_path.exists()):
        return None
    return np.concatenate([load_labels(test_path), load_labels(train_path)]), f"{test_path.parent} (real labels)"


def bench_labels(seed: int) -> tuple[np.ndarray, str]:
    n = M_TEST + M_HOLDOUT + M_TRAIN
    found = real_labels()
    if found is not None and len(found[0]) >= n:
        return found[0][:n].astype(np.uint8), found[1]
    return np.random.default_rng(seed).integers(0, NUM_CLASSES, n).astype(np.uint8), "generated (uniform)"


def synthetic_images(labels: np.ndarray, seed: int) -> np.ndarray:
    """One smooth random prototype per class, each item shifted by up to 3 pixels and noised."""
    rng = np.random.default_rng(seed)
    coarse = rng.random((NUM_CLASSES, 7, 7))
    protos = np.kron(coarse, np.ones((4, 4)))  # (C, 28, 28), blocky shapes
    images = np.empty((len(labels), SIDE, SIDE), dtype=np.uint8)
    shifts = rng.integers(-3, 4, size=(len(labels), 2))
    for i, (label, (dy, dx)) in enumerate(zip(labels, shifts)):
        base = np.roll(protos[label], (int(dy), int(dx)), axis=(0, 1))
        noisy = 170 * base + rng.normal(0, 110, (SIDE, SIDE))
        images[i] = np.clip(noisy, 0, 255).astype(np.uint8)
    return images


def write_idx(path: Path, arr: np.ndarray) -> None:
    """An IDX file of unsigned bytes (type 0x08), gzipped as FashionMNIST ships them."""
    header = bytes([0, 0, 0x08, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    path.write_bytes(gzip.compress(header + np.ascontiguousarray(arr, dtype=np.uint8).tobytes(), compresslevel=1))


# ---------------------------------------------------------------------------
# problem create, as a user runs it
# ---------------------------------------------------------------------------
def create(work: Path, images: Path, labels: Path, kind: str, extra: list[str]) -> tuple[float, dict[str, Any]]:
    out = work / f"problem-{kind}"
    n = M_TEST + M_HOLDOUT + M_TRAIN
    cmd = [sys.executable, "-m", "daimon_node.cli", "problem", "create", "--images", str(images), "--labels",
           str(labels), "--out", str(out), "--key-dir", str(work / "creator"), "--t0", str(T0), "--name", "fmnist",
           "--symbol", "FMN", "--test-fraction", str(M_TEST / n), "--holdout-fraction", str(M_HOLDOUT / n),
           "--del", kind, *extra]
    t = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if done.returncode != 0:
        raise SystemExit(f"problem create --del {kind} failed:\n{done.stdout}\n{done.stderr}")
    return wall, json.loads(done.stdout)


def del_figures(problem: Problem, secret: Path) -> dict[str, Any]:
    """Fidelity on f_int (the repo's evaluation) and what the inspection attack reads off W1."""
    from del_embed.attack import Target, inspection_attack
    from del_embed.evaluate import evaluate_del

    x_t = np.frombuffer(bytes.fromhex(json.loads(secret.read_text())["x_t"]), dtype=np.uint8).astype(np.int64)
    model = problem.dels[0]
    t = time.perf_counter()
    report = evaluate_del(model, x_t, pairs_per_band=150)
    recovered = float((inspection_attack(Target.from_integer(model)) == x_t).mean())
    return {"bands": {b: v["del"] for b, v in report["bands"].items()}, "inspection": recovered,
            "eval_s": time.perf_counter() - t}


# ---------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------
def torch_cnn(x: np.ndarray, y: np.ndarray, seed: int, seconds: float) -> bytes:
    """conv(8)-pool-conv(16)-pool-linear on uint8 images, trained briefly, softmax scores out."""
    import io

    import torch
    from torch import nn

    torch.manual_seed(seed)
    torch.set_num_threads(2)

    class CNN(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                      nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                      nn.Flatten(), nn.Linear(16 * 7 * 7, NUM_CLASSES))

        def forward(self, images: torch.Tensor) -> torch.Tensor:
            z = images.to(torch.float32).unsqueeze(1) / 255.0
            return torch.softmax(self.body(z), dim=1)

    net = CNN()
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    xs, ys = torch.from_numpy(x), torch.from_numpy(y.astype(np.int64))
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        for i in torch.randperm(len(xs)).split(128):
            loss = nn.functional.nll_loss(torch.log(net(xs[i]) + 1e-9), ys[i])
            opt.zero_grad()
            loss.backward()
            opt.step()
    net.eval()
    buf = io.BytesIO()
    torch.onnx.export(net, (xs[:2],), buf, input_names=["images"], output_names=["scores"],
                      dynamic_axes={"images": {0: "n"}, "scores": {0: "n"}}, opset_version=17, dynamo=False)
    return buf.getvalue()


def helper_cnn(seed: int) -> bytes:
    """The same CNN built with the onnx helper and He-initialised weights (no torch: untrained)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)

    def he(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * np.sqrt(2.0 / np.prod(shape[1:]))).astype(np.float32)

    inits = [numpy_helper.from_array(a, n) for a, n in (
        (he(8, 1, 3, 3), "w1"), (np.zeros(8, np.float32), "b1"), (he(16, 8, 3, 3), "w2"),
        (np.zeros(16, np.float32), "b2"), (he(16 * 7 * 7, NUM_CLASSES), "w3"), (np.zeros(NUM_CLASSES, np.float32), "b3"),
        (np.array([255.0], np.float32), "scale"), (np.array([-1, 1, SIDE, SIDE], np.int64), "shape4"),
        (np.array([-1, 16 * 7 * 7], np.int64), "shape2"))]
    node = helper.make_node
    nodes = [
        node("Cast", ["images"], ["f"], to=TensorProto.FLOAT), node("Div", ["f", "scale"], ["f1"]),
        node("Reshape", ["f1", "shape4"], ["x0"]),
        node("Conv", ["x0", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]), node("Relu", ["c1"], ["r1"]),
        node("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2]),
        node("Conv", ["p1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1]), node("Relu", ["c2"], ["r2"]),
        node("MaxPool", ["r2"], ["p2"], kernel_shape=[2, 2], strides=[2, 2]),
        node("Reshape", ["p2", "shape2"], ["flat"]), node("Gemm", ["flat", "w3", "b3"], ["logits"]),
        node("Softmax", ["logits"], ["scores"], axis=1),
    ]
    graph = helper.make_graph(
        nodes, "cnn", [helper.make_tensor_value_info("images", TensorProto.UINT8, ["n", SIDE, SIDE])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["n", NUM_CLASSES])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model.SerializeToString()


def make_cnn(problem_dir: Path, seed: int, seconds: float) -> tuple[bytes, str]:
    try:
        import torch  # noqa: F401
    except ImportError:
        return helper_cnn(seed), "onnx helper, untrained (torch missing)"
    x, y = load_train_split(problem_dir)
    return torch_cnn(x, y, seed, seconds), f"torch, trained {seconds:.0f} s on the train split, torch.onnx.export"


def bare_verify(model: bytes, problem: Problem, batch: int) -> tuple[int, ...]:
    """What a validator does with no sandbox and no checks: one fresh session (one thread, as in the
    sandbox), each input set in batches of ``batch`` rows (0: all at once), argmax, ``f_int``."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(model, sess_options=opts, providers=["CPUExecutionProvider"])
    name_in, name_out = sess.get_inputs()[0].name, sess.get_outputs()[0].name
    labels = []
    for _, z in problem.inputs():
        step = batch or len(z)
        scores = [sess.run([name_out], {name_in: z[i : i + step]})[0] for i in range(0, len(z), step)]
        labels.append(np.argmax(np.concatenate(scores), axis=1))
    return f_int(problem.dels[0], labels[0])


def median_ms(xs: list[float]) -> str:
    return f"{statistics.median(xs) * 1e3:9.1f} ms (min {min(xs) * 1e3:.1f})"


def pass_fail(ok: bool) -> str:
    return "pass" if ok else "FAIL"


# ---------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------
def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--learned-seconds", type=float, default=None,
                   help="--del-max-seconds for the learned DEL (default: the CLI's default cap)")
    p.add_argument("--no-learned", action="store_true", help="skip the learned DEL")
    p.add_argument("--cnn-seconds", type=float, default=20.0, help="CNN training time (torch)")
    p.add_argument("--repeats", type=int, default=7, help="VERIFY and baseline runs, interleaved")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args()


def main() -> None:
    args = parse_args()
    print(f"machine: {os.cpu_count()} CPUs, load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    labels, source = bench_labels(args.seed)
    results: list[tuple[str, bool]] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        images = synthetic_images(labels, args.seed)
        write_idx(work / "images-idx3-ubyte.gz", images)
        write_idx(work / "labels-idx1-ubyte.gz", labels)
        init_data_dir(work / "creator", seed=b"\x16" * 32)
        print(f"data: {len(labels)} synthetic {SIDE}x{SIDE} images, labels {source}; split m={M_TEST}, "
              f"m_h={M_HOLDOUT}, train {M_TRAIN}")

        kinds = [("random", [])]
        if args.no_learned:
            print("learned DEL: skipped (--no-learned)")
        else:
            kinds.append(("learned", [] if args.learned_seconds is None else
                          ["--del-max-seconds", str(args.learned_seconds)]))
        problems: dict[str, Problem] = {}
        print()
        print(f"{'DEL':8} {'create s':>9} {'artifact MB':>12} {'r':>6} {'rank 0-5%':>10} {'rank 5-20%':>11} "
              f"{'MAE 5-20%':>10} {'rank 20-90%':>12} {'x_t read off W1':>16}")
        for kind, extra in kinds:
            wall, out = create(work, work / "images-idx3-ubyte.gz", work / "labels-idx1-ubyte.gz", kind, extra)
            problem = load_problem(Path(out["directory"]))
            problems[kind] = problem
            fig = del_figures(problem, Path(out["secret"]))
            size = (Path(out["directory"]) / problem.tuples[0].del_id.hex()).stat().st_size
            b = fig["bands"]
            print(f"{kind:8} {wall:9.1f} {size / 2**20:12.1f} {out['consistency_ppb'] / 1e9:6.3f} "
                  f"{b['0-5%']['ranking_accuracy']:10.3f} {b['5-20%']['ranking_accuracy']:11.3f} "
                  f"{b['5-20%']['mae']:10.4f} {b['20-90%']['ranking_accuracy']:12.3f} {fig['inspection']:16.3f}")
            history = problem.dels[0].config.get("history") or {}
            if history:
                print(f"{'':8} ({history['steps_done']} training steps in {history['wall_seconds']:.0f} s wall, "
                      f"{history['cpu_seconds']:.0f} s CPU)")
            if kind == "random":
                results.append((f"create with the random DEL {wall:.1f} s <= {CREATE_RANDOM_TARGET_S:.0f} s",
                                wall <= CREATE_RANDOM_TARGET_S))
        print("(r: the consistency allowance problem create measured; rank: 0.5pp ranking accuracy on f_int, "
              "150 pairs per band; chance reading of x_t is 0.100)")

        problem = problems["random"]
        problem_dir = work / "problem-random"
        t = time.perf_counter()
        model, how = make_cnn(problem_dir, args.seed, args.cnn_seconds)
        print()
        print(f"model: small CNN ({how}), {len(model)} bytes, built in {time.perf_counter() - t:.1f} s")
        improver, validator = KeyPair.from_label("bench-improver"), KeyPair.from_label("bench-validator")
        with Sandbox() as sandbox:
            cold = sandbox.start()
            t = time.perf_counter()
            proof = prove(model, problem, improver, period=1, parent=ZERO_HASH, sandbox=sandbox)
            prove_s = time.perf_counter() - t
            print(f"sandbox cold start {cold:.2f} s; first PROVE (uploads Z and Z_h) {prove_s:.2f} s; "
                  f"d = {proof.distances[0] / 1e9:.4f}, ambiguous {sum(len(a) for a in proof.poi.ambiguous)}")
            prove_warm = []
            for _ in range(2):
                t = time.perf_counter()
                prove(model, problem, improver, period=1, parent=ZERO_HASH, sandbox=sandbox)
                prove_warm.append(time.perf_counter() - t)
            bare, bare_whole, ver = [], [], []
            for _ in range(args.repeats):
                t = time.perf_counter()
                y_bare = bare_verify(model, problem, RUN_BATCH_ROWS)
                bare.append(time.perf_counter() - t)
                t = time.perf_counter()
                bare_verify(model, problem, 0)
                bare_whole.append(time.perf_counter() - t)
                t = time.perf_counter()
                checked = verify(proof.poi, model, problem, validator, sandbox=sandbox)
                ver.append(time.perf_counter() - t)
            assert y_bare == proof.poi.ys[0] and checked.distances == proof.distances
        ratio = statistics.median(ver) / statistics.median(bare)
        print(f"warm PROVE             {median_ms(prove_warm)}")
        print(f"bare ORT + f_int       {median_ms(bare)}   (batches of {RUN_BATCH_ROWS} rows, as the sandbox)")
        print(f"  the same, all at once{median_ms(bare_whole)}   (no memory limit; the sandbox's 1 GiB refuses it)")
        print(f"warm VERIFY            {median_ms(ver)}   ratio {ratio:.2f}x")
        results.append((f"VERIFY {ratio:.2f}x bare onnxruntime <= {VERIFY_RATIO_TARGET}x", ratio <= VERIFY_RATIO_TARGET))

        print()
        print(f"{'message':16} {'this run':>10} {'largest allowed':>16} {'cap':>10}")
        params, tuples, m_h = problem.params, problem.tuples, problem.holdout.m_h if problem.holdout else 0
        season_reveal = limits.largest_season_reveal(m_h)
        rows = [
            ("PoI", len(proof.poi.encode()), limits.largest_poi_bytes(params, tuples, m_h), C.MAX_PROOF_MESSAGE_BYTES),
            ("reveal", len(proof.reveal.encode()), len(limits.largest_reveal(tuples, m_h).encode()),
             C.MAX_PROOF_MESSAGE_BYTES),
            ("season reveal", None, len(season_reveal.encode()) if season_reveal else 0, C.MAX_PROOF_MESSAGE_BYTES),
            ("vote", len(checked.vote.encode()), len(limits.largest_vote().encode()), C.MAX_VOTE_MESSAGE_BYTES),
            ("proposal", len(problem.proposal.encode()), None, C.MAX_PROBLEM_MESSAGE_BYTES),
            ("block", None, limits.largest_block_bytes(params, tuples, m_h), C.MAX_BLOCK_MESSAGE_BYTES),
        ]
        for name, real, largest, cap in rows:
            size = max(v for v in (real, largest) if v is not None)
            print(f"{name:16} {'-' if real is None else real:>10} {'-' if largest is None else largest:>16} {cap:>10}")
            results.append((f"{name} fits its cap ({size} <= {cap})", size <= cap))
        topic_caps = (C.MAX_PROOF_MESSAGE_BYTES, C.MAX_VOTE_MESSAGE_BYTES, C.MAX_PROBLEM_MESSAGE_BYTES,
                      C.MAX_BLOCK_MESSAGE_BYTES)
        results.append((f"every topic cap fits a gossip RPC frame ({max(topic_caps)} <= {MAX_RPC_BYTES - RPC_FRAME_SLACK})",
                        max(topic_caps) <= MAX_RPC_BYTES - RPC_FRAME_SLACK))

    print()
    print(f"load average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print("targets:")
    for text, ok in results:
        print(f"  {pass_fail(ok):4}  {text}")
    if not all(ok for _, ok in results):
        sys.exit(1)


if __name__ == "__main__":
    main()
