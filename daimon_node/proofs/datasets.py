"""Bring your own data: labelled datasets from files, for ``problem create --data``.

One loader per format, each returning a ``problem_kit.Dataset``:

- ``load_npz``: a NumPy ``.npz`` with arrays ``X`` (N, ...) and ``y`` (N,);
- ``load_csv``: a CSV (or ``.tsv``) with a header row, one label column named
  by ``--label-column`` and numeric features in every other column;
- ``load_image_folder``: a folder with one subfolder per class of PNG/JPEG
  images, decoded by Pillow, grayscale ``(H, W)`` or RGB ``(H, W, 3)`` uint8;
- ``load_idx_pair``: the IDX pair of MNIST and FashionMNIST (images and labels
  files, gzipped or not); IDX is a fixed binary header over a raw array (see
  ``read_idx``), not an image codec.

``load_data`` picks the loader from the path. Every loader ends in
``dataset_from_arrays``, where the rules common to all formats live once:
labels become class ids ``0..C-1`` in sorted order of the original labels
(the names are kept for ``problem.json``), ``2 <= C <= MAX_CLASSES`` (labels are
one byte on chain and 0xFF is the mask), inputs become float32 or stay uint8,
and the value range of the problem's ``InputSpec`` is derived from the values:
uint8 inputs take the full byte range (any pixel value is a valid query), other
inputs their observed minimum and maximum, rounded outwards to whole numbers
when both are whole and to millionths otherwise.

Loading reads every file in sorted order, so the same files give the same
arrays, and with the same seed the same split and the same content ids.
Every failure is one ``DatasetError`` subclass carrying the offending values.
"""

from __future__ import annotations

import csv
import gzip
import math
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Sequence

import numpy as np

from chain import constants as C

from daimon_node.proofs.problem_errors import ProblemKitError
from daimon_node.proofs.problem_kit import TRAIN_X_FILE, load_problem, load_train_split
from daimon_node.proofs.splits import Dataset, load_dataset

IMAGE_SUFFIXES: Final[frozenset[str]] = frozenset({".png", ".jpg", ".jpeg"})
CSV_DELIMITERS: Final[dict[str, str]] = {".csv": ",", ".tsv": "\t"}
GRAY_MODES: Final[frozenset[str]] = frozenset({"1", "L", "LA"})
WIDE_MODES: Final[frozenset[str]] = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N", "F"})  # > 8 bits per channel
FRACTION_DEN: Final[int] = 1_000_000  # range denominator for inputs with fractional bounds
MAX_ABS_VALUE: Final[float] = float(2**63 - 1) / FRACTION_DEN  # range numerators are I64
MAX_EXACT_FLOAT32_INT: Final[int] = 2**24  # integers above this lose digits as float32
GZIP_MAGIC: Final[bytes] = b"\x1f\x8b"
IDX_TYPES: Final[dict[int, str]] = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


# ---------------------------------------------------------------------------
# Errors: one class per way a user's data can be unusable
# ---------------------------------------------------------------------------
class DatasetError(ProblemKitError):
    """A user's dataset cannot become a problem."""


class UnknownFormat(DatasetError):
    def __init__(self, path: Path) -> None:
        self.path = path
        super().__init__(f"{path}: unknown data format {path.suffix or '(no suffix)'!r}; give a .npz, a .csv/.tsv, "
                         "a folder of class subfolders, or IDX files with --images F --labels F")


class UnreadableFile(DatasetError):
    def __init__(self, path: Path, reason: str) -> None:
        self.path, self.reason = path, reason
        super().__init__(f"cannot read {path}: {reason}")


class BadDataShape(DatasetError):
    """Arrays whose shapes, dtypes or values cannot be a classifier's inputs and labels."""


class MissingLabelColumn(DatasetError):
    def __init__(self, path: Path, column: str | None, columns: Sequence[str]) -> None:
        self.path, self.column, self.columns = path, column, tuple(columns)
        what = "needs --label-column NAME" if column is None else f"has no label column {column!r}"
        super().__init__(f"{path} {what}; its columns are {', '.join(map(repr, columns[:20]))}")


class OneClassOnly(DatasetError):
    def __init__(self, name: str, label: str) -> None:
        self.name, self.label = name, label
        super().__init__(f"{name}: every item has label {label!r}; a classification problem needs at least 2 classes")


class TooManyClasses(DatasetError):
    def __init__(self, name: str, num_classes: int) -> None:
        self.name, self.num_classes = name, num_classes
        super().__init__(f"{name}: {num_classes} classes, at most {C.MAX_CLASSES} fit (labels are one byte on chain)")


class MixedImageSizes(DatasetError):
    def __init__(self, first: Path, first_size: tuple[int, int], other: Path, other_size: tuple[int, int]) -> None:
        self.first, self.first_size, self.other, self.other_size = first, first_size, other, other_size
        super().__init__(f"{other} is {other_size[0]}x{other_size[1]} but {first} is {first_size[0]}x{first_size[1]}; "
                         "give --image-size WxH to resize them all")


class OptionNotApplicable(DatasetError):
    def __init__(self, option: str, fmt: str) -> None:
        self.option, self.format = option, fmt
        super().__init__(f"{option} does not apply to {fmt} data")


# ---------------------------------------------------------------------------
# Common rules: labels, dtypes, value range
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class DataOptions:
    """How to read a dataset; ``None`` means "not given" (and "derive it" where that makes sense)."""

    label_column: str | None = None  # CSV
    image_size: tuple[int, int] | None = None  # image folder: (width, height) to resize to
    grayscale: bool | None = None  # image folder: None = grayscale when every image is
    labels: Path | None = None  # IDX labels file; the data path is then the IDX images file


def class_ids(name: str, labels: np.ndarray) -> tuple[np.ndarray, tuple[str, ...]]:
    """Labels as class ids ``0..C-1`` (sorted order of the originals) and the originals' names."""
    if labels.dtype.kind == "f":
        if not np.isfinite(labels).all() or not (labels == np.round(labels)).all():
            raise BadDataShape(f"{name}: labels are fractional; give class ids or class names")
        labels = labels.astype(np.int64)
    elif labels.dtype.kind not in "iubUS":
        raise BadDataShape(f"{name}: labels of dtype {labels.dtype} are neither class ids nor class names")
    names, ids = np.unique(labels, return_inverse=True)
    if len(names) > C.MAX_CLASSES:
        raise TooManyClasses(name, len(names))
    if len(names) < 2:
        raise OneClassOnly(name, str(names[0]) if len(names) else "(none)")
    return ids.astype(np.int64).reshape(-1), tuple(str(n) for n in names.tolist())


def model_inputs(name: str, x: np.ndarray) -> np.ndarray:
    """Inputs as a model will get them: uint8 kept, bool as uint8, other numbers as float32."""
    if x.dtype == np.uint8:
        return x
    if x.dtype == np.bool_:
        return x.astype(np.uint8)
    if x.dtype.kind in "iu":
        if x.size and int(np.abs(x.astype(np.int64)).max()) > MAX_EXACT_FLOAT32_INT:
            raise BadDataShape(f"{name}: integer inputs above {MAX_EXACT_FLOAT32_INT} do not fit float32 exactly")
        return x.astype(np.float32)
    if x.dtype.kind == "f":
        x32 = x.astype(np.float32)
        if not np.isfinite(x32).all():
            raise BadDataShape(f"{name}: inputs hold NaN or infinity (or values beyond float32)")
        return x32
    raise BadDataShape(f"{name}: inputs of dtype {x.dtype} are not numbers")


def value_range(name: str, x: np.ndarray) -> tuple[int, int, int]:
    """``(low, high, den)``: every input value lies in ``[low/den, high/den]``."""
    if x.dtype == np.uint8:
        return 0, 255, 1
    lo, hi = float(x.min()), float(x.max())
    if max(abs(lo), abs(hi)) > MAX_ABS_VALUE:
        raise BadDataShape(f"{name}: input values up to {max(abs(lo), abs(hi)):.3g} exceed {MAX_ABS_VALUE:.3g}")
    if lo == math.floor(lo) and hi == math.floor(hi):
        return int(lo), int(hi), 1
    return math.floor(lo * FRACTION_DEN), math.ceil(hi * FRACTION_DEN), FRACTION_DEN


def dataset_from_arrays(name: str, x: np.ndarray, labels: np.ndarray) -> Dataset:
    """The rules every format shares: one label per input, 2..255 classes, numeric inputs, a range."""
    if labels.ndim != 1 or x.ndim < 2 or len(x) != len(labels):
        raise BadDataShape(f"{name}: inputs {list(x.shape)} and labels {list(labels.shape)} do not pair up; "
                           "expected X of shape (N, ...) with at least one feature axis and y of shape (N,)")
    if x.ndim > C.MAX_SHAPE_DIMS:
        raise BadDataShape(f"{name}: inputs have {x.ndim} axes, at most {C.MAX_SHAPE_DIMS} (batch axis included)")
    y, names = class_ids(name, labels)
    x = np.ascontiguousarray(model_inputs(name, x))
    low, high, den = value_range(name, x)
    return Dataset(name, x, y, len(names), low, high, value_den=den, class_names=names)


# ---------------------------------------------------------------------------
# Loaders, one per format
# ---------------------------------------------------------------------------
def load_npz(path: Path) -> Dataset:
    """``X`` and ``y`` from an ``.npz`` (``allow_pickle=False``: object arrays are refused)."""
    if not zipfile.is_zipfile(path):  # np.load would take any other file for a pickle and say so
        raise UnreadableFile(path, "not an .npz (zip) archive")
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = [k for k in ("X", "y") if k not in archive.files]
            if missing:
                raise BadDataShape(f"{path} has no {' or '.join(map(repr, missing))} array; found {archive.files}")
            x, y = archive["X"], archive["y"]
    except (OSError, ValueError, EOFError) as exc:  # not a zip, truncated, or an object array
        raise UnreadableFile(path, str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from None
    return dataset_from_arrays(path.stem, x, y)


def load_csv(path: Path, label_column: str | None) -> Dataset:
    """A header row, then one item per row: the label column plus numeric features."""
    delimiter = CSV_DELIMITERS.get(path.suffix.lower(), ",")
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            rows = [row for row in csv.reader(fh, delimiter=delimiter) if any(cell.strip() for cell in row)]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise UnreadableFile(path, str(exc)) from None
    if not rows:
        raise UnreadableFile(path, "the file is empty")
    header = [h.strip() for h in rows[0]]
    if label_column is None or label_column not in header:
        raise MissingLabelColumn(path, label_column, header)
    label_at = header.index(label_column)
    x = np.empty((len(rows) - 1, len(header) - 1), dtype=np.float64)
    labels: list[str] = []
    for i, row in enumerate(rows[1:]):
        line = i + 2  # 1-based, after the header
        if len(row) != len(header):
            raise BadDataShape(f"{path}:{line}: {len(row)} fields, the header has {len(header)}")
        labels.append(row[label_at].strip())
        features = row[:label_at] + row[label_at + 1:]
        for j, cell in enumerate(features):
            try:
                x[i, j] = float(cell)
            except ValueError:
                column = header[j if j < label_at else j + 1]
                raise BadDataShape(f"{path}:{line}: column {column!r} holds {cell.strip()!r}, not a number") from None
    return dataset_from_arrays(path.stem, x, csv_labels(labels))


def csv_labels(cells: list[str]) -> np.ndarray:
    """Integer class ids when every label is an integer (so 2 sorts before 10), class names otherwise."""
    try:
        return np.array([int(c) for c in cells], dtype=np.int64)
    except ValueError:
        return np.array(cells, dtype=str)


def image_files(folder: Path) -> list[tuple[str, list[Path]]]:
    """(class name, sorted image paths) per non-hidden subfolder, in sorted order."""
    if not folder.is_dir():
        raise UnreadableFile(folder, "not a folder")
    classes = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise BadDataShape(f"{folder} has no class subfolders; put each class's images in a subfolder named after it")
    out = []
    for c in classes:
        files = sorted(p for p in c.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise BadDataShape(f"class folder {c} holds no PNG or JPEG image")
        out.append((c.name, files))
    return out


def open_image(path: Path):  # type: ignore[no-untyped-def]
    """A lazily decoded Pillow image (header read only); unreadable files are one typed error."""
    from PIL import Image, UnidentifiedImageError

    try:
        img = Image.open(path)
    except (OSError, UnidentifiedImageError, Image.DecompressionBombError) as exc:
        raise UnreadableFile(path, str(exc)) from None
    if img.mode in WIDE_MODES:
        img.close()
        raise UnreadableFile(path, f"image mode {img.mode} has more than 8 bits per channel; save it as 8-bit")
    return img


def decode_image(path: Path, mode: str, size: tuple[int, int] | None) -> np.ndarray:
    """Pillow decodes, converts to ``mode`` ("L" or "RGB") and, with ``size``, resizes (bilinear)."""
    from PIL import Image, UnidentifiedImageError

    with open_image(path) as img:
        try:
            img = img.convert(mode)
            if size is not None and img.size != size:
                img = img.resize(size, Image.Resampling.BILINEAR)
            return np.asarray(img, dtype=np.uint8)
        except (OSError, UnidentifiedImageError, ValueError) as exc:  # truncated or corrupt data
            raise UnreadableFile(path, str(exc)) from None


def load_image_folder(folder: Path, image_size: tuple[int, int] | None = None,
                      grayscale: bool | None = None) -> Dataset:
    """Images as uint8 ``(H, W)`` (grayscale) or ``(H, W, 3)`` (RGB), labelled by their subfolder.

    A first pass reads only headers: sizes must agree unless ``image_size`` is
    given, and without ``grayscale`` the problem is grayscale exactly when every
    image is.
    """
    per_class = image_files(folder)
    first: tuple[Path, tuple[int, int]] | None = None
    all_gray = True
    for _, files in per_class:
        for path in files:
            with open_image(path) as img:
                size, mode = img.size, img.mode
            all_gray = all_gray and mode in GRAY_MODES
            if first is None:
                first = (path, size)
            elif image_size is None and size != first[1]:
                raise MixedImageSizes(first[0], first[1], path, size)
    mode = "L" if (all_gray if grayscale is None else grayscale) else "RGB"
    arrays, labels = [], []
    for class_name, files in per_class:
        for path in files:
            arrays.append(decode_image(path, mode, image_size))
            labels.append(class_name)
    return dataset_from_arrays(folder.name, np.stack(arrays), np.array(labels, dtype=str))


def read_idx(path: Path) -> np.ndarray:
    """An IDX array: bytes 0-1 zero, byte 2 the element type, byte 3 the number of axes, then one
    big-endian uint32 per axis and the elements, big-endian, row-major. Gzip is detected by its magic."""
    try:
        raw = path.read_bytes()
        if raw[:2] == GZIP_MAGIC:
            raw = gzip.decompress(raw)
    except (OSError, EOFError) as exc:  # missing file, or a damaged gzip stream
        raise UnreadableFile(path, str(exc)) from None
    if len(raw) < 4 or raw[:2] != b"\x00\x00" or raw[2] not in IDX_TYPES or raw[3] == 0:
        raise UnreadableFile(path, "not an IDX file (bad magic number)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise UnreadableFile(path, f"IDX header for {ndim} axes is cut short")
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = np.dtype(IDX_TYPES[raw[2]])
    expected = math.prod(shape) * dtype.itemsize
    if len(raw) - header != expected:
        raise UnreadableFile(path, f"IDX data holds {len(raw) - header} bytes, its header {list(shape)} needs {expected}")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def load_idx_pair(images: Path, labels: Path) -> Dataset:
    """MNIST-format images (N, rows, cols) and labels (N,)."""
    x, y = read_idx(images), read_idx(labels)
    name = images.name.split(".")[0]
    if y.ndim != 1 or len(y) != len(x):
        raise BadDataShape(f"{labels} holds labels of shape {list(y.shape)}, {images} holds {len(x)} images")
    return dataset_from_arrays(name, x, y)


# ---------------------------------------------------------------------------
# Dispatch
# ---------------------------------------------------------------------------
def data_format(path: Path, options: DataOptions) -> str:
    """``idx``, ``images``, ``npz`` or ``csv``, from the options and the path."""
    if options.labels is not None:
        return "idx"
    if path.is_dir():
        return "images"
    if not path.exists():
        raise UnreadableFile(path, "no such file or folder")
    suffix = path.suffix.lower()
    if suffix == ".npz":
        return "npz"
    if suffix in CSV_DELIMITERS:
        return "csv"
    raise UnknownFormat(path)


def check_applicable(fmt: str, options: DataOptions) -> None:
    """An option given for a format it does not shape is a mistake worth saying, not ignoring."""
    used = {
        "--label-column": (options.label_column is not None, {"csv"}),
        "--image-size": (options.image_size is not None, {"images"}),
        "--grayscale/--rgb": (options.grayscale is not None, {"images"}),
    }
    for option, (given, formats) in used.items():
        if given and fmt not in formats:
            raise OptionNotApplicable(option, fmt)


def load_data(path: Path, options: DataOptions | None = None) -> Dataset:
    """The dataset at ``path`` (with ``options.labels``: the IDX images file), by format."""
    options = options or DataOptions()
    path = Path(path)
    fmt = data_format(path, options)
    check_applicable(fmt, options)
    if fmt == "idx":
        assert options.labels is not None
        return load_idx_pair(path, Path(options.labels))
    if fmt == "images":
        return load_image_folder(path, options.image_size, options.grayscale)
    if fmt == "npz":
        return load_npz(path)
    return load_csv(path, options.label_column)


def select_dataset(bundled: str | None, data: Path | None, images: Path | None, labels: Path | None,
                   options: DataOptions) -> Dataset:
    """The one dataset the ``problem create`` flags name: ``--dataset``, ``--data`` or ``--images/--labels``."""
    given = [flag for flag, value in (("--dataset", bundled), ("--data", data), ("--images", images)) if value is not None]
    if len(given) > 1:
        raise DatasetError(f"give one of --dataset, --data or --images/--labels, not {' and '.join(given)}")
    if (images is None) != (labels is None):
        raise DatasetError("IDX data needs both --images FILE and --labels FILE")
    if images is not None:
        return load_data(images, DataOptions(options.label_column, options.image_size, options.grayscale, labels))
    if data is not None:
        return load_data(data, options)
    if options != DataOptions():
        raise DatasetError("--label-column, --image-size and --grayscale/--rgb go with --data")
    return load_dataset(bundled or "digits")


def parse_image_size(text: str | None) -> tuple[int, int] | None:
    """``"28"`` or ``"32x24"`` (width x height) as ``(width, height)``."""
    if text is None:
        return None
    parts = text.lower().split("x")
    try:
        size = (int(parts[0]), int(parts[-1])) if len(parts) <= 2 else None
    except ValueError:
        size = None
    if size is None or not (1 <= size[0] <= 4096 and 1 <= size[1] <= 4096):
        raise DatasetError(f"--image-size {text!r} is not W or WxH with sides 1..4096")
    return size


# ---------------------------------------------------------------------------
# The public training part, for competitors
# ---------------------------------------------------------------------------
def export_train(problem_dir: Path, out: Path) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Write a problem's public training part as ``out`` (an ``.npz`` with ``X`` and ``y``).

    The problem directory is checked first (signatures, content ids), and the
    training inputs must fit its input spec, so what a competitor trains on is
    what the problem's models will be run on. Returns the shapes of X and y.
    """
    problem = load_problem(problem_dir)
    x, y = load_train_split(problem_dir)
    spec = problem.params.input_spec
    if tuple(x.shape[1:]) != tuple(spec.shape) or str(x.dtype) != spec.dtype:
        raise BadDataShape(f"{Path(problem_dir) / TRAIN_X_FILE} holds {x.dtype}{list(x.shape[1:])} items, "
                           f"the problem takes {spec.dtype}{list(spec.shape)}")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "wb") as fh:  # a file object: np.savez would append ".npz" to a path without it
        np.savez_compressed(fh, X=x, y=y)
    return tuple(x.shape), tuple(y.shape)


__all__ = [
    "DataOptions", "DatasetError", "UnknownFormat", "UnreadableFile", "BadDataShape", "MissingLabelColumn",
    "OneClassOnly", "TooManyClasses", "MixedImageSizes", "OptionNotApplicable", "load_data", "load_npz",
    "load_csv", "load_image_folder", "load_idx_pair", "read_idx", "dataset_from_arrays", "select_dataset",
    "parse_image_size", "export_train",
]
