"""The problem contributor's kit: dataset in, signed problem proposal out (docs/design.md §1, §4).

``create_problem`` splits a labelled dataset into

- a *train* split, published for improvers (``train_x.npy``, ``train_y.npy``);
- the *test* inputs ``Z`` (published, content-addressed) whose labels ``x_t``
  stay hidden: only ``y_t = f_int(x_t)`` is published, in the test tuple;
- optionally a *holdout* ``Z_h`` whose labels ``x_h`` are sealed by
  ``H(salt || x_h)`` in the proposal and opened at the end of a season.

It builds the DEL for ``x_t`` (``del_kind``: ``"random"``, an untrained MLP
initialised as a random projection of the one-hot labels, docs/design.md §9's
baseline; or ``"learned"``, the paper's DEL trained by ``del_embed`` on
GENERATEDATA(x_t), which needs torch; docs/soundness.md compares them), signs the test tuple and the proposal, and
writes a problem directory:

    problem.json    human-readable summary (ids in hex, parameters, file names)
    proposal.bin    the proposal's canonical bytes (its SHA-256 is the chain id)
    <hex sha256>    each content file (Z, DEL, Z_h) named by its content id
    train_x.npy, train_y.npy

The secrets (``x_t``, ``x_h`` and the salt) go to a separate private file,
mode 0600, never into the published directory. ``load_problem`` reads a
problem directory back, checking every content file against its id, and
``np.load`` never unpickles (``allow_pickle=False``): the files come from peers.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np

from chain.constants import ZERO_HASH
from chain.crypto import KeyPair
from chain.errors import DecodeError
from chain.labels import array_to_labels
from chain.season import holdout_commitment
from chain.signing import EMPTY_SIGNATURE, is_valid_signature, sign
from chain.proofs import SealedHoldout
from chain.types import InputSpec, ProblemParams, Proposal, TestTuple
from del_embed.integer import IntegerDEL, IntegerDELError, f_int, integer_del_from_bytes

from daimon_node.proofs.problem_del import calibrate_consistency, random_projection_del, require_torch, trained_del
from daimon_node.proofs.problem_errors import DEL_KINDS, ProblemKitError, TooFewItems, UnknownDELKind
from daimon_node.proofs.splits import Dataset, Split, load_dataset, split_dataset
from daimon_node.proofs.problem_params import ProblemOptions, build_params, check_params, check_problem

PROBLEM_FILE: Final[str] = "problem.json"
PROPOSAL_FILE: Final[str] = "proposal.bin"
TRAIN_X_FILE: Final[str] = "train_x.npy"
TRAIN_Y_FILE: Final[str] = "train_y.npy"




# ---------------------------------------------------------------------------
# Writing and reading a problem directory
# ---------------------------------------------------------------------------
def npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(arr), allow_pickle=False)
    return buf.getvalue()


def load_npy(data: bytes) -> np.ndarray:
    """Parse npy bytes from anyone: no pickles, numeric dtypes only."""
    try:
        arr = np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise ProblemKitError(f"malformed npy content: {exc}") from None
    if not isinstance(arr, np.ndarray) or arr.dtype.kind not in "fiu":
        raise ProblemKitError("npy content must be a numeric array")
    return arr


def content_id(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


@dataclass(frozen=True)
class Problem:
    """What PROVE and VERIFY need of a problem: the proposal, its tuples and their content.

    ``tuples`` may hold test tuples beyond the proposal's first (added during
    T_p); ``holdout`` is the sealed holdout in force (the season's), if any;
    ``confirmed_model`` is the season's confirmed model, whose labels on ``Z_h``
    every PoI of the season carries for the paired holdout check (docs/design.md §5).
    """

    proposal: Proposal
    tuples: tuple[TestTuple, ...]
    dels: tuple[IntegerDEL, ...]
    z: tuple[np.ndarray, ...]
    holdout: SealedHoldout | None = None
    z_h: np.ndarray | None = None
    confirmed_model: bytes | None = None

    @property
    def params(self) -> ProblemParams:
        return self.proposal.params

    @property
    def chain_id(self) -> bytes:
        return self.proposal.chain_id

    def inputs(self) -> list[tuple[bytes, np.ndarray]]:
        """(content id, array) of every input set a model is run on: tuples' Z, then Z_h."""
        out = [(t.z_id, z) for t, z in zip(self.tuples, self.z)]
        if self.holdout is not None and self.z_h is not None:
            out.append((self.holdout.z_h_id, self.z_h))
        return out

    def sizes(self) -> list[int]:
        """Lengths of a PoI's label vectors (``chain.season.label_vector_sizes``)."""
        sizes = [t.m for t in self.tuples]
        if self.holdout is not None:
            sizes.append(self.holdout.m_h)
            if self.confirmed_model is not None:
                sizes.append(self.holdout.m_h)
        return sizes


@dataclass(frozen=True)
class CreatedProblem:
    problem: Problem
    directory: Path
    secret_path: Path
    split: Split


def create_problem(
    out_dir: Path,
    creator: KeyPair,
    *,
    dataset: Dataset | str = "digits",
    test_fraction: float = 0.3,
    holdout_fraction: float = 0.0,
    opts: ProblemOptions | None = None,
    secret_path: Path | None = None,
    seasons: int = 1,
) -> CreatedProblem:
    """Split, build the DEL, sign tuple and proposal, and write the problem directory.
    ``secret_path`` (default ``<out_dir>.secret.json``, beside, not inside, the
    published directory) receives ``x_t``, ``x_h`` and the salt with mode 0600.

    With a holdout, ``seasons`` K > 1 cuts the holdout share into K disjoint sets,
    one per season: season 0's is sealed in the proposal; the others' inputs go to
    a private directory ``<out_dir>.holdouts/`` (published only when their season
    is sealed, so nobody can study them early) and their labels and fresh salts
    to the secret file's ``holdouts`` list (see ``holdout_for_season``).
    """
    opts = opts or ProblemOptions()
    check_del_kind(opts)  # before the data is read: a learned DEL without torch is refused at once
    ds = load_dataset(dataset) if isinstance(dataset, str) else dataset
    split = split_dataset(ds, test_fraction=test_fraction, holdout_fraction=holdout_fraction, seed=opts.seed)
    check_before_building(opts, ds, creator, split, seasons)
    out_dir = Path(out_dir)
    if (out_dir / PROPOSAL_FILE).exists():
        raise ProblemKitError(f"{out_dir} already holds a problem; refusing to overwrite it")
    out_dir.mkdir(parents=True, exist_ok=True)
    x_t, m = split.test_y, len(split.test_y)
    del_bytes = build_del(opts, x_t, ds.num_classes)
    del_model = integer_del_from_bytes(del_bytes)
    z_bytes = npy_bytes(split.test_x)
    contents = {content_id(z_bytes): z_bytes, content_id(del_bytes): del_bytes}
    tup = sign(TestTuple(content_id(z_bytes), content_id(del_bytes), m, f_int(del_model, x_t),
                         creator.public_key, EMPTY_SIGNATURE), creator)
    hold_x, hold_y, holdout, season_sets = split.holdout_x, split.holdout_y, None, []
    if hold_x is not None and hold_y is not None:  # season 0's set is sealed in the proposal
        season_sets = seal_season_sets(hold_x, hold_y, seasons)
        first = season_sets[0]
        hold_x, hold_y = hold_x[first["rows"]], hold_y[first["rows"]]
        contents[bytes.fromhex(first["z_h_id"])] = first["bytes"]
        holdout = SealedHoldout(bytes.fromhex(first["z_h_id"]), len(hold_y), bytes.fromhex(first["commitment"]))
    consistency = opts.consistency_ppb
    if consistency is None and holdout is not None:  # measured on the DEL built, for the holdout's consistency test
        consistency = calibrate_consistency(del_model, x_t, ds.num_classes, seed=opts.seed)
    params = build_params(opts, ds, creator, m, holdout.m_h if holdout else 0, consistency)
    check_problem(params, tup, [int(held["m_h"]) for held in season_sets])
    proposal = sign(Proposal(params, tup, holdout, creator.public_key, EMPTY_SIGNATURE), creator)
    write_published(out_dir, contents, split, proposal)
    dataset_row = {"name": ds.name, "train": len(split.train_y), "test": m, "holdout": holdout.m_h if holdout else 0,
                   "split_seed": opts.seed, "seasons": len(season_sets), "classes": list(ds.class_names)}
    (out_dir / PROBLEM_FILE).write_text(json.dumps(problem_summary(proposal, del_model) | {"dataset": dataset_row},
                                                   indent=2) + "\n")
    secret = Path(secret_path) if secret_path is not None else out_dir.with_name(out_dir.name + ".secret.json")
    write_secrets(secret, out_dir.with_name(out_dir.name + ".holdouts"), proposal.chain_id, x_t, hold_y,
                  bytes.fromhex(season_sets[0]["salt"]) if season_sets else None, season_sets)
    problem = Problem(proposal, (tup,), (del_model,), (split.test_x,), holdout, hold_x)
    return CreatedProblem(problem, out_dir, secret, split)


def check_del_kind(opts: ProblemOptions) -> None:
    """A DEL this machine can build: a known kind, and torch for the learned one."""
    if opts.del_kind not in DEL_KINDS:
        raise UnknownDELKind(opts.del_kind)
    if opts.del_kind == "learned":
        require_torch()


def check_before_building(opts: ProblemOptions, ds: Dataset, creator: KeyPair, split: Split, seasons: int) -> None:
    """Everything else that can be refused before the DEL is built (which may take minutes)."""
    if seasons < 1:
        raise ProblemKitError(f"seasons must be at least 1, not {seasons}")
    if split.holdout_y is not None and len(split.holdout_y) < seasons:
        raise TooFewItems(len(ds.y), f"a holdout of {len(split.holdout_y)} inputs cut into {seasons} seasons", seasons)
    first_m_h = -(-len(split.holdout_y) // seasons) if split.holdout_y is not None else 0  # np.array_split's first
    check_params(build_params(opts, ds, creator, len(split.test_y), first_m_h), first_m_h > 0)


def write_published(out_dir: Path, contents: dict[bytes, bytes], split: Split, proposal: Proposal) -> None:
    """What every peer may read: the content files by id, the training part and the proposal."""
    for cid, data in contents.items():
        (out_dir / cid.hex()).write_bytes(data)
    (out_dir / TRAIN_X_FILE).write_bytes(npy_bytes(split.train_x))
    (out_dir / TRAIN_Y_FILE).write_bytes(npy_bytes(split.train_y))
    (out_dir / PROPOSAL_FILE).write_bytes(proposal.encode())


def build_del(opts: ProblemOptions, x_t: np.ndarray, num_classes: int) -> bytes:
    """The DEL artifact for ``x_t`` of the kind the options name."""
    if opts.del_kind == "learned":
        return trained_del(x_t, num_classes, steps=opts.del_steps, seed=opts.seed, max_seconds=opts.del_max_seconds)
    return random_projection_del(x_t, num_classes, n=opts.del_n, seed=opts.seed)


def seal_season_sets(hold_x: np.ndarray, hold_y: np.ndarray, seasons: int) -> list[dict[str, Any]]:
    """The holdout cut into ``seasons`` disjoint sets, each with a fresh salt and its commitment."""
    sets = []
    for k, idx in enumerate(np.array_split(np.arange(len(hold_y)), seasons)):
        k_salt = secrets.token_bytes(32)
        k_bytes = npy_bytes(hold_x[idx])
        sets.append({"season": k, "z_h_id": content_id(k_bytes).hex(), "m_h": len(idx),
                     "x_h": array_to_labels(hold_y[idx]).hex(), "salt": k_salt.hex(),
                     "commitment": holdout_commitment(k_salt, array_to_labels(hold_y[idx])).hex(),
                     "bytes": k_bytes, "rows": idx})
    return sets


def write_secrets(secret: Path, private_dir: Path, chain_id: bytes, x_t: np.ndarray, hold_y: np.ndarray | None,
                  salt: bytes | None, season_sets: list[dict[str, Any]]) -> None:
    """The contributor's secrets (mode 0600) and the later seasons' inputs, kept private until sealed."""
    for entry in season_sets[1:]:
        private_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        (private_dir / entry["z_h_id"]).write_bytes(entry["bytes"])
    write_private_json(secret, {
        "chain_id": chain_id.hex(),
        "x_t": array_to_labels(x_t).hex(),
        "x_h": array_to_labels(hold_y).hex() if hold_y is not None else None,
        "salt": salt.hex() if salt is not None else None,
        "holdouts": [{k: v for k, v in e.items() if k not in ("bytes", "rows")} for e in season_sets],
        "holdout_dir": str(private_dir.resolve()) if len(season_sets) > 1 else None,
    })


def write_private_json(path: Path, obj: dict[str, Any]) -> None:
    """Write a secret file created with mode 0600 (never readable by others, even briefly)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(json.dumps(obj, indent=2) + "\n")
    os.replace(tmp, path)


def problem_summary(proposal: Proposal, del_model: IntegerDEL | None = None) -> dict[str, Any]:
    """A JSON-ready view of a proposal: hex for bytes, every parameter by name."""
    p = proposal.params
    params: dict[str, Any] = {}
    for name, _ in ProblemParams.FIELDS:
        v = getattr(p, name)
        if name == "input_spec":
            v = {"shape": list(v.shape), "dtype": v.dtype, "range": [v.range_num_low, v.range_num_high, v.range_den]}
        elif name == "committers":
            v = [c.hex() for c in v]
        elif name == "genesis":
            v = [{"address": a.address.hex(), "amount": str(a.amount)} for a in v]
        elif name in ("reward_scale", "validator_bond", "improver_bond", "contributor_bond", "committer_bond"):
            v = str(v)
        params[name] = v
    tup = proposal.first_tuple
    out: dict[str, Any] = {
        "chain_id": proposal.chain_id.hex(),
        "creator": proposal.creator.hex(),
        "params": params,
        "tuples": [{"z_id": tup.z_id.hex(), "del_id": tup.del_id.hex(), "m": tup.m, "y_t_len": len(tup.y_t)}],
        "holdout": None,
        "files": {"proposal": PROPOSAL_FILE, "train_x": TRAIN_X_FILE, "train_y": TRAIN_Y_FILE},
    }
    if del_model is not None:
        out["del"] = {"m": del_model.m, "hidden": del_model.hidden, "n": del_model.n,
                      "encoding": del_model.encoding, "kind": del_model.config.get("kind", "trained")}
    if proposal.holdout is not None:
        h = proposal.holdout
        out["holdout"] = {"z_h_id": h.z_h_id.hex(), "m_h": h.m_h, "commitment": h.commitment.hex()}
    return out


def read_content(directory: Path, cid: bytes) -> bytes:
    path = Path(directory) / cid.hex()
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ProblemKitError(f"content {cid.hex()[:16]} is missing from {directory}") from None
    if content_id(data) != cid:
        raise ProblemKitError(f"content file {path.name[:16]} does not match its id")
    return data


def load_problem(directory: Path) -> Problem:
    """Read and check a problem directory: signatures, content ids, and that Z fits its tuple."""
    directory = Path(directory)
    try:
        proposal = Proposal.decode((directory / PROPOSAL_FILE).read_bytes())
    except FileNotFoundError:
        raise ProblemKitError(f"no {PROPOSAL_FILE} in {directory}; run 'daimon-node problem create'") from None
    except DecodeError as exc:
        raise ProblemKitError(f"{directory / PROPOSAL_FILE} is malformed: {exc}") from None
    if not is_valid_signature(proposal, ZERO_HASH) or not is_valid_signature(proposal.first_tuple, ZERO_HASH):
        raise ProblemKitError(f"{directory / PROPOSAL_FILE} carries a bad signature")
    params = proposal.params
    tup = proposal.first_tuple
    try:
        del_model = integer_del_from_bytes(read_content(directory, tup.del_id))
    except IntegerDELError as exc:
        raise ProblemKitError(f"DEL artifact is malformed: {exc}") from None
    if del_model.m != tup.m or del_model.num_classes != params.num_classes or del_model.n != len(tup.y_t):
        raise ProblemKitError("DEL artifact does not fit its test tuple")
    z = check_inputs(load_npy(read_content(directory, tup.z_id)), tup.m, params.input_spec)
    z_h = None
    if proposal.holdout is not None:
        z_h = check_inputs(load_npy(read_content(directory, proposal.holdout.z_h_id)), proposal.holdout.m_h, params.input_spec)
    return Problem(proposal, (tup,), (del_model,), (z,), proposal.holdout, z_h)


def check_inputs(z: np.ndarray, m: int, spec: InputSpec) -> np.ndarray:
    """``Z`` must hold ``m`` inputs of the spec's shape and dtype, every value in its range."""
    if z.shape != (m, *spec.shape) or str(z.dtype) != spec.dtype:
        raise ProblemKitError(f"inputs are {z.dtype}{list(z.shape)}, expected {spec.dtype}{[m, *spec.shape]}")
    if not is_within_range(z, spec):
        raise ProblemKitError(f"inputs hold values outside the problem's range "
                              f"[{spec.range_num_low}/{spec.range_den}, {spec.range_num_high}/{spec.range_den}]")
    return z


def is_within_range(arr: np.ndarray, spec: InputSpec) -> bool:
    """Every value finite and ``value * den`` within ``[low, high]`` (compared exactly for integers)."""
    if arr.size == 0:
        return True
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        return False
    den = spec.range_den or 1
    lo, hi = arr.min(), arr.max()
    if arr.dtype.kind in "iu":
        return int(lo) * den >= spec.range_num_low and int(hi) * den <= spec.range_num_high
    return float(lo) * den >= spec.range_num_low and float(hi) * den <= spec.range_num_high


def load_train_split(directory: Path) -> tuple[np.ndarray, np.ndarray]:
    """The published train split of a problem directory (for improvers)."""
    directory = Path(directory)
    try:
        x = load_npy((directory / TRAIN_X_FILE).read_bytes())
        y = load_npy((directory / TRAIN_Y_FILE).read_bytes())
    except FileNotFoundError as exc:
        raise ProblemKitError(f"{directory} has no train split: {exc.filename}") from None
    if x.ndim < 2 or y.shape != (len(x),):
        raise ProblemKitError(f"train split shapes {x.shape} and {y.shape} do not fit")
    return x, y.astype(np.int64)


def read_secret(path: Path) -> dict[str, Any]:
    """The contributor's private file: ``x_t``, ``x_h`` (numpy arrays) and ``salt`` (bytes)."""
    obj = json.loads(Path(path).read_text())
    return {
        "chain_id": bytes.fromhex(obj["chain_id"]),
        "x_t": np.frombuffer(bytes.fromhex(obj["x_t"]), dtype=np.uint8).astype(np.int64),
        "x_h": None if obj["x_h"] is None else np.frombuffer(bytes.fromhex(obj["x_h"]), dtype=np.uint8).astype(np.int64),
        "salt": None if obj["salt"] is None else bytes.fromhex(obj["salt"]),
        "holdouts": list(obj.get("holdouts") or []),
        "holdout_dir": obj.get("holdout_dir"),
        "path": str(path),
    }


@dataclass(frozen=True)
class SeasonHoldout:
    """One season's sealed holdout as the contributor holds it: inputs, labels and salt."""

    season: int
    sealed: SealedHoldout
    x_h: bytes  # one byte per label
    salt: bytes
    z_h_bytes: bytes | None  # npy bytes, when the inputs are found (season 0's live in the problem dir)


def holdout_for_season(secret: dict[str, Any], season: int, problem_dir: Path | None = None) -> SeasonHoldout | None:
    """Season ``season``'s holdout from a secret file read by ``read_secret`` (None: none left).

    A secret file from before seasons (no ``holdouts`` list) holds season 0 only.
    """
    entries = secret.get("holdouts") or []
    if not entries and season == 0 and secret.get("x_h") is not None and secret.get("salt") is not None:
        labels = array_to_labels(secret["x_h"])
        commitment = holdout_commitment(secret["salt"], labels)
        if problem_dir is not None:
            try:
                proposal = Proposal.decode((Path(problem_dir) / PROPOSAL_FILE).read_bytes())
                if proposal.holdout is not None and proposal.holdout.commitment == commitment:
                    return SeasonHoldout(0, proposal.holdout, labels, secret["salt"],
                                         read_content(problem_dir, proposal.holdout.z_h_id))
            except (FileNotFoundError, DecodeError, ProblemKitError):
                pass
        return None
    for e in entries:
        if int(e["season"]) != season:
            continue
        z_h_id = bytes.fromhex(e["z_h_id"])
        data = None
        for folder in (secret.get("holdout_dir"), problem_dir):
            if folder and (Path(folder) / e["z_h_id"]).exists():
                data = read_content(Path(folder), z_h_id)
                break
        sealed = SealedHoldout(z_h_id, int(e["m_h"]), bytes.fromhex(e["commitment"]))
        return SeasonHoldout(season, sealed, bytes.fromhex(e["x_h"]), bytes.fromhex(e["salt"]), data)
    return None


def season_reveal_for(holdout: SeasonHoldout, chain_id: bytes, keys: KeyPair):  # type: ignore[no-untyped-def]
    """The contributor's signed ``SeasonReveal`` opening ``holdout``."""
    from chain.proofs import SeasonReveal

    if holdout_commitment(holdout.salt, holdout.x_h) != holdout.sealed.commitment:
        raise ProblemKitError(f"the secret file's season {holdout.season} does not open its commitment")
    return sign(SeasonReveal(chain_id, holdout.season, holdout.salt, holdout.x_h, keys.public_key, EMPTY_SIGNATURE),
                keys, chain_id)


__all__ = [
    "Problem", "CreatedProblem", "is_within_range", "check_inputs",
    "create_problem", "load_problem", "load_train_split", "read_secret", "problem_summary",
    "npy_bytes", "load_npy", "SeasonHoldout", "holdout_for_season", "season_reveal_for",
]
