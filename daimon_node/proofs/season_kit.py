"""New data for a running problem: a season's sealed holdout, or a test tuple added during T_p.

``problem add-season`` and ``problem add-tuple`` read data with the same loaders as
``problem create --data`` (``daimon_node.proofs.datasets``); this module checks that it fits
the problem (input spec, classes named as the problem names them), builds what goes on
chain (a ``SealedHoldout``, a signed ``TestTuple`` with its own DEL) and keeps the secrets
beside the problem: a holdout's labels, salt and inputs in the secret file and its private
holdout folder (its inputs are published only when its season opens), a tuple's labels in
the secret file and its inputs and DEL in the problem directory (published: validators need
them). Nothing here talks to a node.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any

import numpy as np

from chain.crypto import KeyPair
from chain.labels import array_to_labels
from chain.proofs import SealedHoldout
from chain.season import holdout_commitment
from chain.signing import EMPTY_SIGNATURE, sign
from chain.types import TestTuple
from del_embed.integer import f_int, integer_del_from_bytes

from daimon_node.proofs.problem_kit import (
    PROBLEM_FILE,
    Dataset,
    Problem,
    ProblemKitError,
    check_inputs,
    content_id,
    npy_bytes,
    random_projection_del,
    write_private_json,
)


class DataDoesNotFit(ProblemKitError):
    """The new data's inputs or classes are not the problem's."""


def problem_classes(problem_dir: Path) -> list[str]:
    """The class names ``problem create`` recorded (empty: the labels were class ids)."""
    try:
        summary = json.loads((Path(problem_dir) / PROBLEM_FILE).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return []
    return [str(c) for c in summary.get("dataset", {}).get("classes", [])]


def fitting_labels(ds: Dataset, problem: Problem, classes: list[str]) -> np.ndarray:
    """``ds``'s labels as the problem's class ids: the same name is the same class, whatever
    other classes the new data happens to hold (its own ids are only its sorted names)."""
    names = list(ds.class_names) or [str(i) for i in range(ds.num_classes)]
    known = classes or [str(i) for i in range(problem.params.num_classes)]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise DataDoesNotFit(f"{ds.name}: classes {', '.join(unknown[:5])} are not the problem's "
                             f"({', '.join(known[:10])}{'...' if len(known) > 10 else ''})")
    mapping = np.array([known.index(n) for n in names], dtype=np.int64)
    return mapping[np.asarray(ds.y, dtype=np.int64)]


def fitting_inputs(ds: Dataset, problem: Problem) -> np.ndarray:
    try:
        return check_inputs(np.asarray(ds.x), len(ds.y), problem.params.input_spec)
    except ProblemKitError as exc:
        raise DataDoesNotFit(f"{ds.name}: {exc}") from None


def read_secret_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(Path(path).read_text())  # type: ignore[no-any-return]
    except FileNotFoundError:
        raise ProblemKitError(f"no secret file {path}; pass --secret (the file 'problem create' wrote)") from None


def seal_holdout(problem: Problem, problem_dir: Path, secret_path: Path, ds: Dataset) -> tuple[SealedHoldout, int]:
    """Seal ``ds`` as a new season's holdout: record its labels, a fresh salt and its inputs
    privately; return the ``SealedHoldout`` for the ``NewHoldout`` and its entry's number in
    the secret file (the chain numbers the season when the transaction lands)."""
    x = fitting_inputs(ds, problem)
    labels = array_to_labels(fitting_labels(ds, problem, problem_classes(problem_dir)))
    secret = read_secret_json(secret_path)
    if secret.get("chain_id") != problem.chain_id.hex():
        raise ProblemKitError(f"{secret_path} belongs to chain {str(secret.get('chain_id'))[:16]}, "
                              f"not {problem.chain_id.hex()[:16]}")
    z_bytes = npy_bytes(x)
    salt = secrets.token_bytes(32)
    sealed = SealedHoldout(content_id(z_bytes), len(labels), holdout_commitment(salt, labels))
    entries = list(secret.get("holdouts") or [])
    if any(e["z_h_id"] == sealed.z_h_id.hex() for e in entries):
        raise DataDoesNotFit(f"{ds.name}: these inputs are already a holdout of this problem")
    number = 1 + max((int(e["season"]) for e in entries), default=0)
    private = Path(secret.get("holdout_dir") or Path(problem_dir).with_name(Path(problem_dir).name + ".holdouts"))
    private.mkdir(mode=0o700, parents=True, exist_ok=True)
    (private / sealed.z_h_id.hex()).write_bytes(z_bytes)
    os.chmod(private / sealed.z_h_id.hex(), 0o600)
    entries.append({"season": number, "z_h_id": sealed.z_h_id.hex(), "m_h": sealed.m_h, "x_h": labels.hex(),
                    "salt": salt.hex(), "commitment": sealed.commitment.hex()})
    secret["holdouts"] = entries
    secret["holdout_dir"] = str(private.resolve())
    write_private_json(Path(secret_path), secret)
    return sealed, number


def make_tuple(problem: Problem, problem_dir: Path, secret_path: Path, ds: Dataset, keys: KeyPair, *,
               del_n: int = 256, seed: int = 0) -> TestTuple:
    """A test tuple over ``ds`` with its own random-projection DEL, signed for the chain: its
    inputs and DEL go into the problem directory (served by the contributor's node), its
    labels ``x_t`` into the secret file's ``extra_tuples``."""
    x = fitting_inputs(ds, problem)
    x_t = fitting_labels(ds, problem, problem_classes(problem_dir))
    secret = read_secret_json(secret_path)
    del_bytes = random_projection_del(x_t, problem.params.num_classes, n=del_n, seed=seed)
    z_bytes = npy_bytes(x)
    tup = TestTuple(content_id(z_bytes), content_id(del_bytes), len(x_t),
                    f_int(integer_del_from_bytes(del_bytes), x_t), keys.public_key, EMPTY_SIGNATURE)
    tup = sign(tup, keys, problem.chain_id)
    for data in (z_bytes, del_bytes):
        (Path(problem_dir) / content_id(data).hex()).write_bytes(data)
    extra = list(secret.get("extra_tuples") or [])
    extra.append({"z_id": tup.z_id.hex(), "del_id": tup.del_id.hex(), "x_t": array_to_labels(x_t).hex()})
    secret["extra_tuples"] = extra
    write_private_json(Path(secret_path), secret)
    return tup


__all__ = ["DataDoesNotFit", "seal_holdout", "make_tuple", "problem_classes", "fitting_labels"]
