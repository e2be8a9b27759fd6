"""Label files and GENERATEDATA, the DEL's training distribution.

GENERATEDATA (paper, docs/design.md §1): copy ``x_t``, pick ``v`` uniformly in ``1..m``,
re-draw ``v`` distinct random positions uniformly from the ``C`` classes.
Training never materialises the perturbed vectors: a DEL's first layer is
linear in the one-hot input, so a perturbation is fully described by the
positions that *changed* and their new labels (``Changes``). That keeps the
cost of one sample proportional to its number of changes, not to ``m``.

Label files: ``.npy`` (1-D integer array) or IDX (``idx1-ubyte``, optionally
gzip-compressed, e.g. FashionMNIST's ``t10k-labels-idx1-ubyte.gz``). Loading
never unpickles (``allow_pickle=False``).
"""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import LabelFileError

IDX_UBYTE_1D_MAGIC = 0x00000801  # IDX: unsigned byte, 1 dimension
FASHION_MNIST_LABELS_FILE = "t10k-labels-idx1-ubyte.gz"
DATASETS_ENV = "DAIMON_DATASETS"  # a folder holding fashion-mnist/; overrides the default below
PROJECT_ROOT = Path(__file__).resolve().parent.parent


def fashion_mnist_test_labels() -> Path:
    """Where FashionMNIST's test labels are looked for: ``$DAIMON_DATASETS/fashion-mnist/``,
    else ``../shared/datasets/fashion-mnist/`` next to the project checkout. The file may not
    exist; callers check (the benchmark and tests take a path flag or skip)."""
    root = os.environ.get(DATASETS_ENV)
    base = Path(root) if root else PROJECT_ROOT.parent / "shared" / "datasets"
    return base / "fashion-mnist" / FASHION_MNIST_LABELS_FILE


# ---------------------------------------------------------------------------
# Label files
# ---------------------------------------------------------------------------
def load_labels(path: str | Path) -> np.ndarray:
    """Read a 1-D int64 label vector from ``.npy`` or (gzipped) IDX."""
    p = Path(path)
    if not p.is_file():
        raise LabelFileError(f"label file {p} does not exist")
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise LabelFileError(f"cannot read label file {p}: {exc}") from exc
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise LabelFileError(f"label file {p} is not valid gzip: {exc}") from exc
    if raw[:6] == b"\x93NUMPY":
        labels = _parse_npy(raw, p)
    else:
        labels = _parse_idx(raw, p)
    if labels.size == 0:
        raise LabelFileError(f"label file {p} holds no labels")
    if int(labels.min()) < 0:
        raise LabelFileError(f"label file {p} holds negative labels")
    return labels


def _parse_npy(raw: bytes, p: Path) -> np.ndarray:
    import io

    try:
        arr = np.load(io.BytesIO(raw), allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise LabelFileError(f"label file {p} is not a valid .npy array: {exc}") from exc
    if arr.ndim != 1 or arr.dtype.kind not in "iu":
        raise LabelFileError(f"label file {p} must hold a 1-D integer array, not {arr.dtype}{arr.shape}")
    return arr.astype(np.int64)


def _parse_idx(raw: bytes, p: Path) -> np.ndarray:
    if len(raw) < 8:
        raise LabelFileError(f"label file {p} is neither .npy nor IDX (too short)")
    magic = int.from_bytes(raw[:4], "big")
    if magic != IDX_UBYTE_1D_MAGIC:
        raise LabelFileError(f"label file {p} is neither .npy nor a 1-D IDX ubyte file (magic {magic:#010x})")
    count = int.from_bytes(raw[4:8], "big")
    if len(raw) != 8 + count:
        raise LabelFileError(f"IDX file {p} declares {count} labels but holds {len(raw) - 8} bytes")
    return np.frombuffer(raw, dtype=np.uint8, offset=8).astype(np.int64)


def save_labels_npy(path: str | Path, labels: np.ndarray) -> None:
    np.save(Path(path), np.asarray(labels, dtype=np.int64), allow_pickle=False)


def num_classes_of(labels: np.ndarray, minimum: int = 2) -> int:
    return max(minimum, int(labels.max()) + 1)


# ---------------------------------------------------------------------------
# GENERATEDATA
# ---------------------------------------------------------------------------
def generate_data(x_t: np.ndarray, num_classes: int, rng: np.random.Generator, v: int | None = None) -> np.ndarray:
    """The paper's GENERATEDATA: one perturbed copy of ``x_t`` (v uniform in 1..m unless given)."""
    m = x_t.shape[0]
    if v is None:
        v = int(rng.integers(1, m + 1))
    x = x_t.copy()
    pos = rng.choice(m, size=v, replace=False)
    x[pos] = rng.integers(0, num_classes, size=v)
    return x


@dataclass(frozen=True)
class Changes:
    """A batch of perturbations of ``x_t`` as flat (sample, position, new label) triples.

    ``offsets[s]:offsets[s+1]`` indexes sample ``s``'s changed positions;
    ``errors[s]`` is its true error e = (#changed)/m.
    """

    positions: np.ndarray  # (K,) int64
    new_labels: np.ndarray  # (K,) int64
    offsets: np.ndarray  # (B+1,) int64
    errors: np.ndarray  # (B,) float64

    @property
    def batch_size(self) -> int:
        return int(self.offsets.shape[0] - 1)

    def sample(self, s: int) -> tuple[np.ndarray, np.ndarray]:
        a, b = int(self.offsets[s]), int(self.offsets[s + 1])
        return self.positions[a:b], self.new_labels[a:b]

    def apply(self, x_t: np.ndarray, s: int) -> np.ndarray:
        """Materialise sample ``s`` as a full label vector."""
        pos, new = self.sample(s)
        x = x_t.copy()
        x[pos] = new
        return x


def changes_from_draws(
    x_t: np.ndarray, num_classes: int, rng: np.random.Generator, vs: np.ndarray
) -> Changes:
    """GENERATEDATA for each ``v`` in ``vs``, kept as the positions that really changed.

    A re-drawn position keeps its label with probability 1/C, so e ≈ v(C-1)/(Cm).
    """
    m = x_t.shape[0]
    pos_list, new_list, counts = [], [], []
    for v in vs:
        v = int(v)
        pos = np.argpartition(rng.random(m), v - 1)[:v] if v < m else np.arange(m)
        new = rng.integers(0, num_classes, size=v)
        keep = new != x_t[pos]
        pos_list.append(pos[keep])
        new_list.append(new[keep])
        counts.append(int(keep.sum()))
    return _pack(pos_list, new_list, counts, m)


def changes_exact(
    x_t: np.ndarray, num_classes: int, rng: np.random.Generator, ks: np.ndarray
) -> Changes:
    """Perturbations with exactly ``k`` changed positions each (each to a different class).

    Used for evaluation pairs whose true errors must differ by an exact amount.
    """
    m = x_t.shape[0]
    pos_list, new_list = [], []
    for k in ks:
        k = int(k)
        pos = np.argpartition(rng.random(m), k - 1)[:k] if 0 < k < m else np.arange(k)
        shift = rng.integers(1, num_classes, size=k)
        pos_list.append(pos)
        new_list.append((x_t[pos] + shift) % num_classes)
    return _pack(pos_list, new_list, [int(k) for k in ks], m)


def _pack(pos_list: list[np.ndarray], new_list: list[np.ndarray], counts: list[int], m: int) -> Changes:
    offsets = np.zeros(len(counts) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum(counts)
    empty = np.zeros(0, dtype=np.int64)
    return Changes(
        positions=np.concatenate(pos_list).astype(np.int64) if pos_list else empty,
        new_labels=np.concatenate(new_list).astype(np.int64) if new_list else empty,
        offsets=offsets,
        errors=np.asarray(counts, dtype=np.float64) / m,
    )


def sample_v(
    rng: np.random.Generator, batch: int, m: int, num_classes: int, low_error_frac: float, low_error_max: float
) -> np.ndarray:
    """Draw re-draw counts v for a training batch.

    With probability ``1 - low_error_frac`` v is the paper's uniform 1..m; otherwise
    v targets a true error uniform in ``[0, low_error_max]``. The mixture spends
    most compute on the 0-25% errors where a chain's models live (and which
    are cheap, since cost grows with the number of changes) while still covering
    the whole range.
    """
    vs = rng.integers(1, m + 1, size=batch)
    low = rng.random(batch) < low_error_frac
    keep = (num_classes - 1) / num_classes
    e = rng.random(int(low.sum())) * low_error_max
    vs[low] = np.clip(np.rint(e * m / keep), 1, m).astype(np.int64)
    return vs
