"""Bring your own data: each loader on real files the test writes, each bad input, reproducible splits,
and ``problem create --data`` then ``problem export-train`` through the CLI."""

from __future__ import annotations

import gzip
import json
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from chain.constants import MAX_CLASSES
from chain.crypto import KeyPair
import daimon_node.cli.app as cli
from chain.types import InputSpec
from daimon_node.proofs.datasets import (
    FRACTION_DEN,
    DataOptions,
    DatasetError,
    MissingLabelColumn,
    MixedImageSizes,
    OneClassOnly,
    OptionNotApplicable,
    TooManyClasses,
    UnknownFormat,
    UnreadableFile,
    load_data,
    read_idx,
)
from daimon_node.keystore import init_data_dir
from daimon_node.proofs.problem_errors import ProblemKitError, TooFewItems
from daimon_node.proofs.problem_kit import check_inputs, create_problem, load_problem
from daimon_node.proofs.problem_params import ProblemOptions

CREATOR = KeyPair.from_label("datasets-creator")
T0 = 1_700_000_000


# ---------------------------------------------------------------------------
# Writers: files as a user would have them
# ---------------------------------------------------------------------------
def write_npz(path: Path, x: np.ndarray, y: np.ndarray) -> Path:
    np.savez(path, X=x, y=y)
    return path


def write_csv(path: Path, header: list[str], rows: list[list[object]]) -> Path:
    path.write_text("\n".join(",".join(str(c) for c in r) for r in [header, *rows]) + "\n")
    return path


def write_image_folder(root: Path, images: np.ndarray, labels: np.ndarray, suffix: str = ".png",
                       class_name: str = "class{}") -> Path:
    """One subfolder per label; uint8 (H, W) arrays saved as mode L, (H, W, 3) as RGB."""
    for i, (img, label) in enumerate(zip(images, labels)):
        folder = root / class_name.format(label)
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(folder / f"{i:05d}{suffix}")
    return root


def idx_bytes(arr: np.ndarray, type_code: int = 0x08) -> bytes:
    """The IDX format by its spec: 0, 0, type, ndim; one big-endian uint32 per axis; big-endian data."""
    big = {0x08: ">u1", 0x0B: ">i2", 0x0D: ">f4"}[type_code]
    return bytes([0, 0, type_code, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.astype(big).tobytes()


def digits_uint8() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits as 8x8 uint8 images: values 0..16 scaled to 0..255 (16 * 255 // 16 = 255)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    return (d.images * 255 // 16).astype(np.uint8), d.target.astype(np.int64)


def small_images(n: int = 12, size: tuple[int, int] = (6, 5), seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, size[1], size[0]), dtype=np.uint8), np.arange(n) % 3


# ---------------------------------------------------------------------------
# Loaders on good files
# ---------------------------------------------------------------------------
def test_npz_float_inputs_keep_their_shape_and_get_a_fractional_range(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.uniform(-1.5, 2.25, (20, 4, 3))  # float64 in the file, any input shape
    y = np.array([3, 7] * 10)  # class ids that are not 0..C-1
    ds = load_data(write_npz(tmp_path / "feat.npz", x, y))
    assert ds.x.dtype == np.float32 and ds.x.shape == (20, 4, 3)
    np.testing.assert_array_equal(ds.y, (y == 7).astype(np.int64))
    assert ds.num_classes == 2 and ds.class_names == ("3", "7")
    # floor/ceil at millionths: the range holds every value, and is within one millionth of min/max
    assert ds.value_den == FRACTION_DEN
    assert ds.value_low <= ds.x.min() * FRACTION_DEN < ds.value_low + 1
    assert ds.value_high - 1 < ds.x.max() * FRACTION_DEN <= ds.value_high


def test_npz_uint8_inputs_stay_uint8_with_the_byte_range(tmp_path: Path) -> None:
    x = np.arange(30 * 5, dtype=np.uint8).reshape(30, 5)
    ds = load_data(write_npz(tmp_path / "u8.npz", x, np.array(["cat", "dog", "eel"] * 10)))
    assert ds.x.dtype == np.uint8 and (ds.value_low, ds.value_high, ds.value_den) == (0, 255, 1)
    assert ds.class_names == ("cat", "dog", "eel") and ds.y[:3].tolist() == [0, 1, 2]


def test_csv_label_column_anywhere_and_numeric_class_ids_sort_as_numbers(tmp_path: Path) -> None:
    rows = [[float(i), 10 if i % 2 else 2, i * 2] for i in range(8)]
    ds = load_data(write_csv(tmp_path / "t.csv", ["a", "label", "b"], rows), DataOptions(label_column="label"))
    assert ds.x.shape == (8, 2) and ds.x.dtype == np.float32
    np.testing.assert_array_equal(ds.x[:, 1], np.arange(8) * 2)
    assert ds.class_names == ("2", "10") and ds.y.tolist() == [i % 2 for i in range(8)]
    assert (ds.value_low, ds.value_high, ds.value_den) == (0, 14, 1)  # whole-number bounds


def test_image_folder_png_grayscale_is_pixel_exact(tmp_path: Path) -> None:
    images, labels = small_images()
    ds = load_data(write_image_folder(tmp_path / "imgs", images, labels))
    assert ds.x.shape == (12, 5, 6) and ds.x.dtype == np.uint8  # (H, W): PNG mode L
    # files are read class folder by class folder, each in name order
    order = np.argsort(labels, kind="stable")
    np.testing.assert_array_equal(ds.x, images[order])
    np.testing.assert_array_equal(ds.y, labels[order])
    assert ds.class_names == ("class0", "class1", "class2")


def test_image_folder_rgb_jpeg_and_forced_modes_and_resize(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (6, 4, 4, 3), dtype=np.uint8)
    folder = write_image_folder(tmp_path / "jpg", rgb, np.arange(6) % 2, suffix=".jpg")
    ds = load_data(folder)
    assert ds.x.shape == (6, 4, 4, 3) and ds.x.dtype == np.uint8
    assert load_data(folder, DataOptions(grayscale=True)).x.shape == (6, 4, 4)
    resized = load_data(folder, DataOptions(image_size=(8, 2)))  # width 8, height 2
    assert resized.x.shape == (6, 2, 8, 3)
    gray = write_image_folder(tmp_path / "gray", *small_images())
    as_rgb = load_data(gray, DataOptions(grayscale=False)).x
    assert as_rgb.shape == (12, 5, 6, 3) and (as_rgb[..., 0] == as_rgb[..., 2]).all()


@pytest.mark.parametrize("gz", [False, True])
def test_idx_pair_plain_and_gzipped(tmp_path: Path, gz: bool) -> None:
    images, labels = small_images(n=10, size=(7, 7))
    pack = gzip.compress if gz else (lambda b: b)
    img_path, lbl_path = tmp_path / "train-images-idx3-ubyte", tmp_path / "train-labels-idx1-ubyte"
    img_path.write_bytes(pack(idx_bytes(images)))
    lbl_path.write_bytes(pack(idx_bytes(labels.astype(np.uint8))))
    ds = load_data(img_path, DataOptions(labels=lbl_path))
    np.testing.assert_array_equal(ds.x, images)
    np.testing.assert_array_equal(ds.y, labels)
    assert ds.x.dtype == np.uint8 and ds.x.shape == (10, 7, 7)


def test_idx_wider_element_types_are_read_big_endian(tmp_path: Path) -> None:
    arr = np.array([[-2, 300], [7, -32768]], dtype=np.int16)
    (tmp_path / "a").write_bytes(idx_bytes(arr, 0x0B))
    np.testing.assert_array_equal(read_idx(tmp_path / "a"), arr)
    floats = np.array([0.5, -1.25], dtype=np.float32)
    (tmp_path / "f").write_bytes(idx_bytes(floats, 0x0D))
    np.testing.assert_array_equal(read_idx(tmp_path / "f"), floats)


# ---------------------------------------------------------------------------
# Bad inputs: one typed error each
# ---------------------------------------------------------------------------
def bad_cases(tmp: Path) -> dict[str, tuple[list[str], type[Exception]]]:
    """name -> (``problem create`` data flags, the typed error they raise), files written under ``tmp``."""
    x = np.zeros((10, 3), np.float32)
    cases: dict[str, tuple[list[str], type[Exception]]] = {}
    csv = write_csv(tmp / "t.csv", ["a", "b", "y"], [[1, 2, i % 2] for i in range(6)])
    cases["missing label column"] = (["--data", str(csv), "--label-column", "label"], MissingLabelColumn)
    cases["no label column given"] = (["--data", str(csv)], MissingLabelColumn)
    cases["one class only"] = (["--data", str(write_npz(tmp / "one.npz", x, np.full(10, 4)))], OneClassOnly)
    many = MAX_CLASSES + 1
    cases["more than 255 classes"] = (
        ["--data", str(write_npz(tmp / "many.npz", np.zeros((many, 2), np.float32), np.arange(many)))], TooManyClasses)
    mixed = write_image_folder(tmp / "mixed", *small_images(n=4, size=(6, 5)))
    Image.fromarray(np.zeros((9, 9), np.uint8)).save(mixed / "class1" / "big.png")
    cases["mixed image sizes"] = (["--data", str(mixed)], MixedImageSizes)
    # 3 items with a 0.3 test share: round(0.9) = 1 test item, round(0.6) = 1 holdout item, but 2 seasons
    cases["too few items for the split"] = (
        ["--data", str(write_npz(tmp / "few.npz", x[:3], np.array([0, 1, 0]))), "--seasons", "2"], TooFewItems)
    broken = write_image_folder(tmp / "broken", *small_images(n=4))
    (broken / "class0" / "cut.png").write_bytes((broken / "class0" / "00000.png").read_bytes()[:20])
    cases["unreadable image"] = (["--data", str(broken)], UnreadableFile)
    (tmp / "junk.npz").write_bytes(b"not a zip archive")
    cases["unreadable npz"] = (["--data", str(tmp / "junk.npz")], UnreadableFile)
    (tmp / "cut-idx").write_bytes(idx_bytes(np.zeros((4, 3, 3), np.uint8))[:-1])
    (tmp / "lbl-idx").write_bytes(idx_bytes(np.arange(4, dtype=np.uint8)))
    cases["truncated idx"] = (["--images", str(tmp / "cut-idx"), "--labels", str(tmp / "lbl-idx")], UnreadableFile)
    (tmp / "bad.gz").write_bytes(gzip.compress(idx_bytes(np.zeros(4, np.uint8)))[:-8])
    cases["damaged gzip"] = (["--images", str(tmp / "bad.gz"), "--labels", str(tmp / "lbl-idx")], UnreadableFile)
    (tmp / "data.txt").write_text("1 2 3\n")
    cases["unknown format"] = (["--data", str(tmp / "data.txt")], UnknownFormat)
    cases["option for another format"] = (
        ["--data", str(tmp / "one.npz"), "--image-size", "8"], OptionNotApplicable)
    return cases


@pytest.fixture(scope="module")
def bad(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[list[str], type[Exception]]]:
    return bad_cases(tmp_path_factory.mktemp("bad"))


@pytest.fixture(scope="module")
def key_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("keys") / "creator"
    init_data_dir(path)
    return path


CASE_NAMES = ["missing label column", "no label column given", "one class only", "more than 255 classes",
              "mixed image sizes", "too few items for the split", "unreadable image", "unreadable npz",
              "truncated idx", "damaged gzip", "unknown format", "option for another format"]


@pytest.mark.parametrize("case", CASE_NAMES)
def test_invalid_data_is_one_typed_error_and_one_cli_line(case: str, bad, key_dir: Path, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                          monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    flags, error = bad[case]
    argv = ["daimon-node", "problem", "create", *flags, "--out", str(tmp_path / "p"), "-k", str(key_dir),
            "--t0", str(T0)]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(error):  # the typed error, from the command itself
        cli.app(argv[1:], standalone_mode=False)
    with pytest.raises(SystemExit) as exited:  # and through the entry point a user runs: one line, exit 1
        cli.main()
    assert exited.value.code == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    assert not (tmp_path / "p").exists()  # nothing half-written


# ---------------------------------------------------------------------------
# Reproducible splits
# ---------------------------------------------------------------------------
def content_ids(created) -> dict[str, object]:  # type: ignore[no-untyped-def]
    """Everything a problem's data decides: test inputs, DEL, holdout inputs per season, training part."""
    p = created.problem
    secret = json.loads(created.secret_path.read_text())
    d = created.directory
    return {"z": p.tuples[0].z_id, "del": p.tuples[0].del_id, "y_t": p.tuples[0].y_t,
            "z_h": [e["z_h_id"] for e in secret["holdouts"]], "x_t": secret["x_t"],
            "train": ((d / "train_x.npy").read_bytes(), (d / "train_y.npy").read_bytes())}


@pytest.mark.timeout(120)
def test_same_data_and_seed_give_the_same_problem_content(tmp_path: Path) -> None:
    images, labels = small_images(n=60, size=(4, 4), seed=3)
    folder = write_image_folder(tmp_path / "imgs", images, labels)

    def make(name: str, seed: int):  # type: ignore[no-untyped-def]
        return create_problem(tmp_path / name, CREATOR, dataset=load_data(folder), holdout_fraction=0.4,
                              seasons=2, opts=ProblemOptions(t0=T0, seed=seed, del_n=32))

    a, b, other = content_ids(make("a", 7)), content_ids(make("b", 7)), content_ids(make("c", 8))
    assert a == b
    assert a["z"] != other["z"] and a["z_h"] != other["z_h"] and a["train"] != other["train"]


# ---------------------------------------------------------------------------
# Through the CLI: an image folder written from digits, then export-train
# ---------------------------------------------------------------------------
def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "daimon_node.cli", *args], capture_output=True, text=True,
                          timeout=240)


@pytest.mark.timeout(300)
def test_problem_create_from_an_image_folder_then_export_train(tmp_path: Path, key_dir: Path) -> None:
    images, labels = digits_uint8()
    folder = write_image_folder(tmp_path / "digits-png", images, labels, class_name="{}")
    problem = tmp_path / "problem"
    r = run_cli("problem", "create", "--data", str(folder), "--name", "pngdigits", "--symbol", "PNG",
                "--out", str(problem), "-k", str(key_dir), "--t0", str(T0))
    assert r.returncode == 0, r.stderr
    made = json.loads(r.stdout)
    assert made["input_spec"] == {"shape": [8, 8], "dtype": "uint8", "range": [0, 255, 1]}
    assert made["classes"] == [str(c) for c in range(10)]
    spec = load_problem(problem).params.input_spec  # the spec is in the signed proposal, not only printed
    assert (spec.shape, spec.dtype) == ((8, 8), "uint8") and load_problem(problem).params.num_classes == 10
    out = tmp_path / "train.npz"
    r = run_cli("problem", "export-train", "--problem", str(problem), "--out", str(out))
    assert r.returncode == 0, r.stderr
    with np.load(out, allow_pickle=False) as exported:
        x, y = exported["X"], exported["y"]
    # the default split: round(0.3 * 1797) = 539 test, round(0.2 * 1797) = 359 holdout, the rest public
    assert x.shape == (1797 - 539 - 359, 8, 8) == (made["train"], 8, 8) and x.dtype == np.uint8
    assert y.shape == (made["train"],) and set(np.unique(y)) <= set(range(10))
    # each exported item is one of the images written, with its own label
    written = {img.tobytes(): int(c) for img, c in zip(images, labels)}
    assert all(written[img.tobytes()] == int(c) for img, c in zip(x, y))


@pytest.mark.timeout(120)
def test_bundled_digits_still_work_and_do_not_mix_with_data(tmp_path: Path, key_dir: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    """``--dataset digits`` (the testnet's and demo's data) gives the float32 0..16 spec it always had."""
    cli.app(["problem", "create", "--dataset", "digits", "--out", str(tmp_path / "d"), "-k", str(key_dir),
             "--t0", str(T0)], standalone_mode=False)
    made = json.loads(capsys.readouterr().out)
    assert made["input_spec"] == {"shape": [64], "dtype": "float32", "range": [0, 16, 1]}
    assert made["classes"] == [str(c) for c in range(10)]
    with pytest.raises(DatasetError, match="not --dataset and --data"):
        cli.app(["problem", "create", "--dataset", "digits", "--data", str(tmp_path), "--out", str(tmp_path / "e"),
                 "-k", str(key_dir)], standalone_mode=False)


def test_invalid_problem_inputs_outside_their_declared_range() -> None:
    """A contributor's Z must lie inside the spec it signed: a runner refuses such queries from users."""
    spec = InputSpec((2,), "float32", 0, 1, 1)
    assert check_inputs(np.array([[0.0, 1.0]], np.float32), 1, spec).shape == (1, 2)
    for bad_value in (1.5, -0.25, np.nan):
        with pytest.raises(ProblemKitError, match="outside the problem's range"):
            check_inputs(np.array([[0.0, bad_value]], np.float32), 1, spec)
