"""PROVE and VERIFY with real digits classifiers, and the chain settling what they produce."""

from __future__ import annotations

import dataclasses
import hashlib
import math
from pathlib import Path

import numpy as np
import pytest

from chain.builder import build_improvement_block, build_problem_block, make_transaction
from chain.consensus import period_end
from chain.crypto import KeyPair
from chain.labels import array_to_labels, labels_hash, labels_to_array, masked_digest
from chain.signing import check_signature, sign
from chain.outcome import memory_env
from chain.payloads import RegisterDigest, RegisterValidator
from chain.proofs import Ambiguous, PoI, model_claim
from chain.types import Anchor
from daimon_node.harness.examples import train_example
from daimon_node.proofs.poi import (
    BadProofSignature,
    DigestMismatch,
    EmbeddingMismatch,
    LabelsHashMismatch,
    MalformedProof,
    NotAmbiguous,
    OrderSeedMismatch,
    NotAnImprovement,
    TooManyAmbiguous,
    TooManyTies,
    UncoveredTie,
    WrongChain,
    predict,
    prove,
    top_two_gap,
    verify,
)
from daimon_node.proofs.problem_kit import Problem, create_problem, read_content, read_secret
from daimon_node.proofs.problem_params import ProblemOptions
from daimon_node.proofs.sandbox import ModelTooLarge, Sandbox, SandboxLimits
from del_embed.integer import PPB, distance_ppb, f_int

CREATOR = KeyPair.from_label("test-creator")
IMPROVER = KeyPair.from_label("test-improver")
VALIDATOR = KeyPair.from_label("test-validator")
PARENT = hashlib.sha256(b"head").digest()
TAU_PPB = 50_000_000  # a wide tie margin (0.05) so the example models have ambiguous positions


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    opts = ProblemOptions(
        tie_margin_ppb=TAU_PPB, max_ambiguous=100, t0=1_700_000_000,
        genesis=tuple((k.address_bytes, 100 * 10**18) for k in (CREATOR, IMPROVER, VALIDATOR)),
    )
    return create_problem(tmp_path_factory.mktemp("poi") / "digits", CREATOR, holdout_fraction=0.15, opts=opts)


@pytest.fixture(scope="module")
def problem(made) -> Problem:  # type: ignore[no-untyped-def]
    return made.problem


@pytest.fixture(scope="module")
def models(made) -> dict[str, bytes]:  # type: ignore[no-untyped-def]
    s = made.split
    return {name: train_example(name, s.train_x, s.train_y, 10).onnx_bytes for name in ("weak", "mlp")}


@pytest.fixture(scope="module")
def sandbox():  # type: ignore[no-untyped-def]
    with Sandbox(SandboxLimits(memory_bytes=1 << 30)) as sb:
        yield sb


@pytest.fixture(scope="module")
def proofs(problem, models, sandbox):  # type: ignore[no-untyped-def]
    return {name: prove(m, problem, IMPROVER, period=1, parent=PARENT, sandbox=sandbox) for name, m in models.items()}


def resign(poi: PoI, **changes) -> PoI:  # type: ignore[no-untyped-def]
    """The prover's own tampering: change fields and sign again (the signature stays valid)."""
    return sign(dataclasses.replace(poi, **changes), IMPROVER, poi.chain_id)


# ---------------------------------------------------------------------------
# Valid proofs
# ---------------------------------------------------------------------------
@pytest.mark.timeout(120)
def test_better_model_verifies_and_votes(problem, models, proofs, sandbox, made) -> None:  # type: ignore[no-untyped-def]
    proof = proofs["mlp"]
    poi = proof.poi
    check_signature(poi, problem.chain_id)
    check_signature(proof.reveal, problem.chain_id)
    assert poi.model_digest == hashlib.sha256(models["mlp"]).digest()
    assert poi.period == 1 and poi.parent == PARENT and poi.prover == IMPROVER.public_key
    assert proof.reveal.poi_hash == poi.hash and labels_hash(proof.reveal.labels) == poi.labels_hash
    assert [len(v) for v in proof.reveal.labels] == problem.sizes()
    assert sum(len(a) for a in poi.ambiguous) > 0  # the wide tie margin exercises the masking path
    verdict = verify(poi, models["mlp"], problem, VALIDATOR, sandbox=sandbox)
    vote = verdict.vote
    check_signature(vote, problem.chain_id)
    assert (vote.chain_id, vote.period, vote.poi_hash, vote.parent) == (poi.chain_id, 1, poi.hash, PARENT)
    assert vote.labels_digest == masked_digest(VALIDATOR.public_key, proof.reveal.labels, poi.ambiguous)
    assert verdict.distances == proof.distances
    # The labels really are the model's predictions, and the distance tracks the true error.
    x_t = read_secret(made.secret_path)["x_t"]
    error = float((labels_to_array(proof.labels[0]) != x_t).mean())
    assert error < 0.06
    # The random-projection DEL (n Gaussian rows) estimates cos = 1 - error of the one-hot vectors
    # with a standard deviation of about (1 - cos^2) / sqrt(n) (Johnson-Lindenstrauss for the
    # normalised inner product): d stays within 5 of those of the true error.
    cos, n = 1.0 - error, len(proof.poi.ys[0])
    assert abs(proof.distances[0] / PPB - error) < 5 * (1 - cos**2) / math.sqrt(n)


@pytest.mark.timeout(120)
def test_worse_model_fails_against_d_c(problem, models, proofs, sandbox) -> None:  # type: ignore[no-untyped-def]
    better, worse = proofs["mlp"].distances[0], proofs["weak"].distances[0]
    assert worse > better + 5 * problem.params.delta_ppb  # clearly different quality
    # Against a fresh chain (d_c = 1) the weak model is an improvement too...
    verify(proofs["weak"].poi, models["weak"], problem, VALIDATOR, sandbox=sandbox)
    # ...but not once the better model has set d_c.
    with pytest.raises(NotAnImprovement):
        verify(proofs["weak"].poi, models["weak"], problem, VALIDATOR, sandbox=sandbox, d_c=[better])
    # The better model must beat d_c by more than delta, not merely match it.
    with pytest.raises(NotAnImprovement):
        verify(proofs["mlp"].poi, models["mlp"], problem, VALIDATOR, sandbox=sandbox,
               d_c=[better + problem.params.delta_ppb])


def test_predict_lists_ties_within_tau() -> None:
    scores = np.array([[0.5, 0.49, 0.01], [0.9, 0.05, 0.05], [0.3, 0.3, 0.4], [0.2, 0.4, 0.4]], np.float32)
    labels, amb = predict(scores, 0.02)
    assert labels.tolist() == [0, 0, 2, 1]
    assert [(a.index, a.label) for a in amb] == [(0, 0), (3, 1)]
    np.testing.assert_allclose(top_two_gap(scores), [0.01, 0.85, 0.1, 0.0], atol=1e-6)


# ---------------------------------------------------------------------------
# Invalid proofs: each breaks one thing and fails its own check
# ---------------------------------------------------------------------------
@pytest.mark.timeout(60)
def test_invalid_signature_of_tampered_proof(problem, models, proofs, sandbox) -> None:  # type: ignore[no-untyped-def]
    poi = proofs["mlp"].poi
    y0 = list(poi.ys[0])
    y0[0] += 1
    tampered = dataclasses.replace(poi, ys=(tuple(y0),))  # not re-signed
    with pytest.raises(BadProofSignature):
        verify(tampered, models["mlp"], problem, VALIDATOR, sandbox=sandbox)


@pytest.mark.timeout(60)
def test_invalid_embedding(problem, models, proofs, sandbox) -> None:  # type: ignore[no-untyped-def]
    poi = proofs["mlp"].poi
    y0 = list(poi.ys[0])
    y0[0] += 1
    with pytest.raises(EmbeddingMismatch):
        verify(resign(poi, ys=(tuple(y0),)), models["mlp"], problem, VALIDATOR, sandbox=sandbox)


@pytest.mark.timeout(60)
def test_invalid_labels_hash(problem, models, proofs, sandbox) -> None:  # type: ignore[no-untyped-def]
    poi = proofs["mlp"].poi
    with pytest.raises(LabelsHashMismatch):
        verify(resign(poi, labels_hash=hashlib.sha256(b"x").digest()), models["mlp"], problem, VALIDATOR, sandbox=sandbox)


@pytest.mark.timeout(60)
def test_invalid_claim_of_another_model(problem, models, proofs, sandbox) -> None:  # type: ignore[no-untyped-def]
    """The weak model's labels claimed for the mlp's digest: the re-run labels differ."""
    weak = proofs["weak"].poi
    mlp = proofs["mlp"].poi
    claim = resign(weak, model_digest=mlp.model_digest, ambiguous=mlp.ambiguous, order_seed=mlp.order_seed)
    with pytest.raises((LabelsHashMismatch, NotAmbiguous)):
        verify(claim, models["mlp"], problem, VALIDATOR, sandbox=sandbox)


@pytest.mark.timeout(60)
def test_invalid_order_seed(problem, models, proofs, sandbox) -> None:  # type: ignore[no-untyped-def]
    """A seed the prover picked (after seeing the parent) would let it choose the vote order."""
    claim = resign(proofs["mlp"].poi, order_seed=b"\x01" * 32)
    with pytest.raises(OrderSeedMismatch):
        verify(claim, models["mlp"], problem, VALIDATOR, sandbox=sandbox)


@pytest.mark.timeout(60)
def test_invalid_digest(problem, models, proofs, sandbox) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(DigestMismatch):
        verify(proofs["mlp"].poi, models["weak"], problem, VALIDATOR, sandbox=sandbox)


@pytest.mark.timeout(60)
def test_invalid_chain(problem, models, proofs, sandbox) -> None:  # type: ignore[no-untyped-def]
    poi = proofs["mlp"].poi
    other = hashlib.sha256(b"other chain").digest()
    with pytest.raises(WrongChain):
        verify(sign(dataclasses.replace(poi, chain_id=other), IMPROVER, other), models["mlp"], problem, VALIDATOR, sandbox=sandbox)


def small_limit(problem: Problem, limit: int) -> Problem:
    params = dataclasses.replace(problem.params, max_model_bytes=limit)
    proposal = sign(dataclasses.replace(problem.proposal, params=params), CREATOR)
    return dataclasses.replace(problem, proposal=proposal)


@pytest.mark.timeout(60)
def test_invalid_oversized_model(problem, models, proofs, sandbox) -> None:  # type: ignore[no-untyped-def]
    tight = small_limit(problem, len(models["mlp"]) - 1)
    with pytest.raises(ModelTooLarge):
        prove(models["mlp"], tight, IMPROVER, period=1, parent=PARENT, sandbox=sandbox)
    poi = proofs["mlp"].poi
    claim = sign(dataclasses.replace(poi, chain_id=tight.chain_id), IMPROVER, tight.chain_id)
    with pytest.raises(ModelTooLarge):
        verify(claim, models["mlp"], tight, VALIDATOR, sandbox=sandbox)


@pytest.mark.timeout(60)
def test_invalid_uncovered_tie(problem, models, proofs, sandbox) -> None:  # type: ignore[no-untyped-def]
    """Dropping a listed near-tie leaves labels_hash intact, but the validator sees the tie."""
    poi = proofs["mlp"].poi
    (scores, _) = sandbox.run(models["mlp"], problem.inputs(), num_classes=10, max_model_bytes=10**8)
    closest = int(np.argmin(top_two_gap(scores)))
    assert top_two_gap(scores)[closest] <= TAU_PPB / PPB / 2
    dropped = tuple(a for a in poi.ambiguous[0] if a.index != closest)
    assert len(dropped) == len(poi.ambiguous[0]) - 1
    with pytest.raises(UncoveredTie):
        verify(resign(poi, ambiguous=(dropped, *poi.ambiguous[1:])), models["mlp"], problem, VALIDATOR, sandbox=sandbox)


@pytest.mark.timeout(60)
def test_invalid_ambiguous_abuse(problem, models, proofs, sandbox) -> None:  # type: ignore[no-untyped-def]
    """A prover who relabels a confident position via the ambiguous set is caught, even with consistent hashes."""
    proof = proofs["mlp"]
    poi = proof.poi
    (scores, _) = sandbox.run(models["mlp"], problem.inputs(), num_classes=10, max_model_bytes=10**8)
    confident = int(np.argmax(top_two_gap(scores)))
    labels = labels_to_array(proof.labels[0]).copy()
    labels[confident] = (labels[confident] + 1) % 10
    amb0 = tuple(sorted((*poi.ambiguous[0], Ambiguous(confident, int(labels[confident]))), key=lambda a: a.index))
    vectors = (array_to_labels(labels), *proof.labels[1:])
    forged = resign(poi, ambiguous=(amb0, *poi.ambiguous[1:]), labels_hash=labels_hash(vectors),
                    ys=(f_int(problem.dels[0], labels),))
    with pytest.raises(NotAmbiguous):
        verify(forged, models["mlp"], problem, VALIDATOR, sandbox=sandbox)


@pytest.mark.timeout(60)
def test_invalid_too_many_ambiguous(problem, models, proofs, sandbox) -> None:  # type: ignore[no-untyped-def]
    poi = proofs["mlp"].poi
    limit = problem.params.max_ambiguous
    padded = tuple(Ambiguous(i, 0) for i in range(limit + 1))
    with pytest.raises(TooManyAmbiguous):
        verify(resign(poi, ambiguous=(padded, *poi.ambiguous[1:])), models["mlp"], problem, VALIDATOR, sandbox=sandbox)


@pytest.mark.timeout(60)
def test_prove_refuses_more_ties_than_allowed(problem, models, sandbox) -> None:  # type: ignore[no-untyped-def]
    params = dataclasses.replace(problem.params, max_ambiguous=0)
    strict = dataclasses.replace(problem, proposal=sign(dataclasses.replace(problem.proposal, params=params), CREATOR))
    with pytest.raises(TooManyTies):
        prove(models["mlp"], strict, IMPROVER, period=1, parent=PARENT, sandbox=sandbox)


# ---------------------------------------------------------------------------
# The chain settles exactly what PROVE and VERIFY produce
# ---------------------------------------------------------------------------
@pytest.mark.timeout(120)
def test_chain_anchors_and_settles_a_real_proof(made, problem, models, sandbox) -> None:  # type: ignore[no-untyped-def]
    directory: Path = made.directory
    tup = problem.tuples[0]
    env = memory_env({cid: read_content(directory, cid) for cid in (tup.z_id, tup.del_id)})
    params = problem.params
    creator = CREATOR  # the only committer
    block, out = build_problem_block(problem.proposal, creator, period_end(params, 0), env)
    state = out.state
    model = models["mlp"]
    digest = hashlib.sha256(model).digest()
    fee = params.min_fee
    txs = [make_transaction(IMPROVER, problem.chain_id, 0, RegisterDigest(model_claim(IMPROVER.public_key, digest)), fee),
           make_transaction(VALIDATOR, problem.chain_id, 0, RegisterValidator(), fee)]
    _, out = build_improvement_block(state, creator, period=1, timestamp=period_end(params, 1), env=env, transactions=txs)
    state = out.state
    proof = prove(model, problem, IMPROVER, period=2, parent=state.head, sandbox=sandbox)
    verdict = verify(proof.poi, model, problem, VALIDATOR, sandbox=sandbox)
    _, out = build_improvement_block(state, creator, period=2, timestamp=period_end(params, 2), env=env,
                                     anchor=Anchor(proof.poi, (verdict.vote,)))
    state = out.state
    assert out.receipt.anchored == proof.poi.hash
    _, out = build_improvement_block(state, creator, period=3, timestamp=period_end(params, 3), env=env,
                                     settlement=proof.reveal)
    settlement = out.settlement
    assert settlement is not None and settlement.outcome == "settled", settlement
    assert settlement.distances == proof.distances
    assert settlement.improver_reward > 0
    assert [addr for addr, _ in settlement.validator_rewards] == [VALIDATOR.address_bytes]
    assert distance_ppb(proof.poi.ys[0], tup.y_t) == proof.distances[0]


# ---------------------------------------------------------------------------
# A season with a confirmed model: the PoI carries its labels on Z_h too
# ---------------------------------------------------------------------------
@pytest.mark.timeout(120)
def test_proof_carries_the_confirmed_models_holdout_labels(problem, models, sandbox) -> None:  # type: ignore[no-untyped-def]
    season = dataclasses.replace(problem, confirmed_model=models["weak"])
    assert len(season.sizes()) == len(problem.sizes()) + 1
    proof = prove(models["mlp"], season, IMPROVER, period=1, parent=PARENT, sandbox=sandbox)
    assert [len(v) for v in proof.reveal.labels] == season.sizes()
    # the last vector is the confirmed model's prediction on Z_h, the one before it the prover's own
    weak_on_h = prove(models["weak"], problem, IMPROVER, period=1, parent=PARENT, sandbox=sandbox).labels[-1]
    assert proof.labels[-1] == weak_on_h
    assert proof.labels[-2] != weak_on_h
    verdict = verify(proof.poi, models["mlp"], season, VALIDATOR, sandbox=sandbox)
    assert verdict.labels == proof.labels
    # A validator holding another confirmed model (a wrong baseline) rebuilds other labels.
    other = dataclasses.replace(problem, confirmed_model=models["mlp"])
    with pytest.raises((LabelsHashMismatch, UncoveredTie, NotAmbiguous)):
        verify(proof.poi, models["mlp"], other, VALIDATOR, sandbox=sandbox)
    # A proof without the confirmed model's labels does not fit the season.
    bare = prove(models["mlp"], problem, IMPROVER, period=1, parent=PARENT, sandbox=sandbox)
    with pytest.raises(MalformedProof):
        verify(bare.poi, models["mlp"], season, VALIDATOR, sandbox=sandbox)
