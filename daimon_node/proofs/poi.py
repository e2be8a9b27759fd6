"""PROVE and VERIFY: a proof of improvement from a real ONNX model, and its check (docs/design.md §3–§5).

PROVE runs the model in the sandbox on every test tuple's ``Z`` (and on
``Z_h`` when a sealed holdout is in force, and then the season's confirmed
model on ``Z_h`` too, for the paired holdout check), takes argmax labels, lists the
*ambiguous* positions whose top-two scores are within the tie margin
``tau = tie_margin_ppb / 1e9`` (an absolute score gap), computes
``y_i = f_int(labels_i)`` and signs the PoI; the Reveal for the next period is
signed alongside. These are exactly the objects ``chain.devnet`` builds from
label vectors, so the chain's settlement (``check_revealed_labels``) accepts them.

VERIFY re-runs the model and accepts the PoI only if every check passes; each
failure is its own ``VerifyError`` subclass. Floats from onnxruntime may differ
in the last bits between machines, so the tie rule is applied with slack on the
validator's side:

- *coverage*: every position where the validator's own top-two gap is at most
  ``tau * COVER_FRACTION`` must be listed (the prover listed everything within
  ``tau``, so a drift below ``tau * (1 - COVER_FRACTION)`` cannot fail an honest PoI);
- *plausibility*: at every listed position the PoI's label must score within
  ``tau * ALLOW_FACTOR`` of the validator's top score, so a prover cannot use
  the ambiguous sets to overwrite confident predictions (a white-box DEL attack
  on up to ``max_ambiguous`` positions).

Outside listed positions the validator's own argmax labels are used; if the
prover's labels differed there, ``labels_hash`` does not match.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Final, Sequence

import numpy as np

from chain.crypto import KeyPair
from chain.labels import array_to_labels, labels_hash, masked_digest
from chain.signing import EMPTY_SIGNATURE, is_valid_signature, sign
from chain.settlement import model_order_seed
from chain.proofs import Ambiguous, PoI, Reveal, Vote
from del_embed.integer import PPB, distance_ppb, f_int

from daimon_node.errors import DaimonError
from daimon_node.proofs.problem_kit import Problem
from daimon_node.proofs.sandbox import ModelTooLarge, Sandbox

COVER_FRACTION: Final[float] = 0.5  # validator's own gaps <= tau * this must be listed
ALLOW_FACTOR: Final[float] = 2.0  # a listed label must score within tau * this of the top


# ---------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------
class ProveError(DaimonError):
    """The model cannot be proven on this problem."""


class TooManyTies(ProveError):
    """The model has more near-ties than the problem's ``max_ambiguous`` allows."""


class VerifyError(DaimonError):
    """Base of every reason a validator rejects a PoI; the subclass names the check."""


class WrongChain(VerifyError):
    """The PoI is for another chain than the problem's."""


class BadProofSignature(VerifyError):
    """The PoI's signature does not verify for its prover on this chain."""


class MalformedProof(VerifyError):
    """The PoI's embeddings or ambiguous sets do not fit the problem's tuples."""


class DigestMismatch(VerifyError):
    """The model bytes do not hash to the PoI's model digest."""


class OrderSeedMismatch(VerifyError):
    """The PoI's order seed is not ``chain.settlement.model_order_seed`` of its model.

    The chain cannot check it (it never holds the model); a prover free to pick it
    after seeing the parent would choose the vote order."""


class TooManyAmbiguous(VerifyError):
    """The PoI lists more ambiguous positions than ``max_ambiguous``."""


class UncoveredTie(VerifyError):
    """The validator found a near-tie the PoI does not list as ambiguous."""


class NotAmbiguous(VerifyError):
    """The PoI lists a position whose label is not near the validator's top score."""


class LabelsHashMismatch(VerifyError):
    """The reconstructed label vectors do not hash to the PoI's ``labels_hash``."""


class EmbeddingMismatch(VerifyError):
    """``f_int`` of the reconstructed labels differs from the PoI's ``y_i``."""


class NotAnImprovement(VerifyError):
    """A tuple's exact distance does not beat ``d_c - delta``."""


# ---------------------------------------------------------------------------
# Labels and near-ties from scores
# ---------------------------------------------------------------------------
def tie_margin(problem: Problem) -> float:
    return problem.params.tie_margin_ppb / PPB


def top_two_gap(scores: np.ndarray) -> np.ndarray:
    """Per row: highest score minus second highest, in float64."""
    s = np.asarray(scores, dtype=np.float64)
    top2 = np.partition(s, -2, axis=1)[:, -2:]
    return top2[:, 1] - top2[:, 0]


def predict(scores: np.ndarray, tau: float) -> tuple[np.ndarray, tuple[Ambiguous, ...]]:
    """Argmax labels (lowest class on exact ties) and the positions with a top-two gap <= ``tau``."""
    labels = np.argmax(scores, axis=1).astype(np.int64)
    near = np.flatnonzero(top_two_gap(scores) <= tau)
    return labels, tuple(Ambiguous(int(i), int(labels[i])) for i in near)


def model_digest(model: bytes) -> bytes:
    """The PoI's ``digest(M)``: SHA-256 of the ONNX file's bytes."""
    return hashlib.sha256(model).digest()


def run_scores(model: bytes, problem: Problem, sandbox: Sandbox) -> list[np.ndarray]:
    """Scores on every input set (tuples' Z, then Z_h), under the problem's limits."""
    p = problem.params
    return sandbox.run(model, problem.inputs(), num_classes=p.num_classes, max_model_bytes=p.max_model_bytes,
                       wall_seconds=p.max_infer_ms / 1000.0)


_CONFIRMED_SCORES: dict[tuple[bytes, bytes], np.ndarray] = {}  # (model digest, Z_h id) -> scores
_CONFIRMED_CACHE_SIZE: Final[int] = 4


def confirmed_scores(problem: Problem, sandbox: Sandbox) -> list[np.ndarray]:
    """The confirmed model's scores on Z_h (none before a model is confirmed or without a holdout).

    Every PoI of a season needs the same ones, so they are computed once per
    (model, Z_h) and kept.
    """
    if problem.confirmed_model is None or problem.holdout is None or problem.z_h is None:
        return []
    key = (model_digest(problem.confirmed_model), problem.holdout.z_h_id)
    scores = _CONFIRMED_SCORES.get(key)
    if scores is None:
        p = problem.params
        scores = sandbox.run(problem.confirmed_model, [(problem.holdout.z_h_id, problem.z_h)],
                             num_classes=p.num_classes, max_model_bytes=p.max_model_bytes,
                             wall_seconds=p.max_infer_ms / 1000.0)[0]
        while len(_CONFIRMED_SCORES) >= _CONFIRMED_CACHE_SIZE:
            _CONFIRMED_SCORES.pop(next(iter(_CONFIRMED_SCORES)))
        _CONFIRMED_SCORES[key] = scores
    return [scores]


# ---------------------------------------------------------------------------
# PROVE
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Proof:
    """A signed PoI, its Reveal (publish next period), and what the prover learnt on the way."""

    poi: PoI
    reveal: Reveal
    labels: tuple[bytes, ...]
    distances: tuple[int, ...]  # d(y_i, y_t_i) in ppb, for the prover's information


def prove(model: bytes, problem: Problem, keys: KeyPair, *, period: int, parent: bytes, sandbox: Sandbox) -> Proof:
    """PROVE(M): run, label, list near-ties, embed with ``f_int``, sign PoI and Reveal.

    Raises a ``SandboxError`` if the model cannot run, ``TooManyTies`` if it has
    more near-ties than ``max_ambiguous``.
    """
    scores = run_scores(model, problem, sandbox) + confirmed_scores(problem, sandbox)
    tau = tie_margin(problem)
    vectors: list[bytes] = []
    ambiguous: list[tuple[Ambiguous, ...]] = []
    label_arrays: list[np.ndarray] = []
    for s in scores:
        labels, amb = predict(s, tau)
        label_arrays.append(labels)
        vectors.append(array_to_labels(labels))
        ambiguous.append(amb)
    total = sum(len(a) for a in ambiguous)
    if total > problem.params.max_ambiguous:
        raise TooManyTies(f"model has {total} near-ties within {tau:g}; the problem allows {problem.params.max_ambiguous}")
    ys = tuple(f_int(d, x) for d, x in zip(problem.dels, label_arrays))
    distances = tuple(distance_ppb(y, t.y_t) for y, t in zip(ys, problem.tuples))
    chain_id = problem.chain_id
    poi = PoI(chain_id, period, parent, model_digest(model), ys, labels_hash(vectors), tuple(ambiguous),
              model_order_seed(model), keys.public_key, EMPTY_SIGNATURE)
    poi = sign(poi, keys, chain_id)
    reveal = sign(Reveal(chain_id, poi.hash, tuple(vectors), keys.public_key, EMPTY_SIGNATURE), keys, chain_id)
    return Proof(poi, reveal, tuple(vectors), distances)


# ---------------------------------------------------------------------------
# VERIFY
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Verdict:
    """A passed verification: the signed vote and the exact distances it checked."""

    vote: Vote
    distances: tuple[int, ...]
    labels: tuple[bytes, ...]


def check_proof_shape(poi: PoI, problem: Problem) -> None:
    """Chain, signature, and that embeddings and ambiguous sets fit the problem (cheap checks first)."""
    if poi.chain_id != problem.chain_id:
        raise WrongChain(f"PoI is for chain {poi.chain_id.hex()[:16]}, problem is {problem.chain_id.hex()[:16]}")
    if not is_valid_signature(poi, problem.chain_id):
        raise BadProofSignature(f"bad PoI signature by {poi.prover.hex()[:16]}")
    sizes = problem.sizes()
    if len(poi.ys) != len(problem.tuples):
        raise MalformedProof(f"PoI has {len(poi.ys)} embeddings for {len(problem.tuples)} tuples")
    for i, (y, t) in enumerate(zip(poi.ys, problem.tuples)):
        if len(y) != len(t.y_t):
            raise MalformedProof(f"embedding {i} has length {len(y)}, expected {len(t.y_t)}")
    if len(poi.ambiguous) != len(sizes):
        raise MalformedProof(f"PoI has {len(poi.ambiguous)} ambiguous sets for {len(sizes)} label vectors")
    total = sum(len(a) for a in poi.ambiguous)
    if total > problem.params.max_ambiguous:
        raise TooManyAmbiguous(f"PoI lists {total} ambiguous positions; the problem allows {problem.params.max_ambiguous}")
    for j, (amb, size) in enumerate(zip(poi.ambiguous, sizes)):
        idx = [a.index for a in amb]
        if any(b <= a for a, b in zip(idx, idx[1:])):
            raise MalformedProof(f"ambiguous set {j} is not strictly increasing")
        if idx and idx[-1] >= size:
            raise MalformedProof(f"ambiguous set {j} names position {idx[-1]} of {size}")
        if any(a.label >= problem.params.num_classes for a in amb):
            raise MalformedProof(f"ambiguous set {j} names a label outside the {problem.params.num_classes} classes")


def check_model_bytes(poi: PoI, model: bytes, problem: Problem) -> None:
    if len(model) > problem.params.max_model_bytes:
        raise ModelTooLarge(len(model), problem.params.max_model_bytes)
    if model_digest(model) != poi.model_digest:
        raise DigestMismatch(f"model hashes to {model_digest(model).hex()[:16]}, PoI says {poi.model_digest.hex()[:16]}")
    if model_order_seed(model) != poi.order_seed:
        raise OrderSeedMismatch(f"the PoI's order seed {poi.order_seed.hex()[:16]} is not its model's")


def reconstruct_labels(scores: np.ndarray, amb: Sequence[Ambiguous], tau: float, j: int) -> np.ndarray:
    """The validator's labels with the PoI's labels at listed positions, after the tie checks."""
    labels = np.argmax(scores, axis=1).astype(np.int64)
    listed = np.fromiter((a.index for a in amb), dtype=np.int64, count=len(amb))
    own_ties = np.flatnonzero(top_two_gap(scores) <= tau * COVER_FRACTION)
    uncovered = np.setdiff1d(own_ties, listed, assume_unique=True)
    if uncovered.size:
        raise UncoveredTie(f"label vector {j}: {uncovered.size} near-ties not listed as ambiguous, first at {int(uncovered[0])}")
    if listed.size:
        claimed = np.fromiter((a.label for a in amb), dtype=np.int64, count=len(amb))
        s = np.asarray(scores, dtype=np.float64)
        lag = s[listed].max(axis=1) - s[listed, claimed]
        bad = np.flatnonzero(lag > tau * ALLOW_FACTOR)
        if bad.size:
            i = int(listed[bad[0]])
            raise NotAmbiguous(f"label vector {j}: position {i} is listed with label {int(claimed[bad[0]])}, "
                               f"{float(lag[bad[0]]):.3g} below the top score")
        labels[listed] = claimed
    return labels


def verify(
    poi: PoI,
    model: bytes,
    problem: Problem,
    keys: KeyPair,
    *,
    sandbox: Sandbox,
    d_c: Sequence[int] | None = None,
) -> Verdict:
    """VERIFY: check ``poi`` against ``model`` by re-running it; sign a vote if every check passes.

    ``d_c`` is the chain's current best distance per tuple (default: 10^9 ppb,
    a new chain's). Raises a ``VerifyError`` subclass naming the failed check,
    or a ``SandboxError`` if the model itself cannot be run.
    """
    check_proof_shape(poi, problem)
    check_model_bytes(poi, model, problem)
    current = tuple(d_c) if d_c is not None else tuple(PPB for _ in problem.tuples)
    if len(current) != len(problem.tuples):
        raise ValueError(f"d_c has {len(current)} entries for {len(problem.tuples)} tuples")
    scores = run_scores(model, problem, sandbox) + confirmed_scores(problem, sandbox)
    tau = tie_margin(problem)
    arrays = [reconstruct_labels(s, amb, tau, j) for j, (s, amb) in enumerate(zip(scores, poi.ambiguous))]
    vectors = tuple(array_to_labels(a) for a in arrays)
    if labels_hash(vectors) != poi.labels_hash:
        raise LabelsHashMismatch("the model's labels do not hash to the PoI's labels_hash")
    distances = []
    delta = problem.params.delta_ppb
    for i, (del_model, tup, x, y, dc) in enumerate(zip(problem.dels, problem.tuples, arrays, poi.ys, current)):
        if f_int(del_model, x) != tuple(y):
            raise EmbeddingMismatch(f"f_int of tuple {i}'s labels differs from the PoI's y_{i}")
        d = distance_ppb(y, tup.y_t)
        if not d < dc - delta:
            raise NotAnImprovement(f"tuple {i}: distance {d} ppb does not beat d_c {dc} - delta {delta}")
        distances.append(d)
    digest = masked_digest(keys.public_key, vectors, poi.ambiguous)
    vote = sign(Vote(poi.chain_id, poi.period, poi.hash, poi.parent, digest, keys.public_key, EMPTY_SIGNATURE),
                keys, poi.chain_id)
    return Verdict(vote, tuple(distances), vectors)


__all__ = [
    "Proof", "Verdict", "prove", "verify", "predict", "top_two_gap", "model_digest", "reconstruct_labels",
    "ProveError", "TooManyTies", "VerifyError", "WrongChain", "BadProofSignature", "MalformedProof",
    "DigestMismatch", "OrderSeedMismatch", "TooManyAmbiguous", "UncoveredTie", "NotAmbiguous", "LabelsHashMismatch",
    "EmbeddingMismatch", "NotAnImprovement", "COVER_FRACTION", "ALLOW_FACTOR",
]
