"""Test tuples added during T_p (issue 16; the design's ``submitTestSet``).

An extra tuple is a ``TestTuple`` signed by the problem's contributor for this chain; the
Problem block, committed once T_p is over, carries those received during T_p, and they
join the test set: every PoI then carries one embedding per tuple, ``d_c`` has one entry
per tuple and the improver gets the mean reward. ``chain.tuples.check_extra_tuple`` is the
one rule (the Problem block, the node's pool and the RPC all call it).
"""

from __future__ import annotations

import dataclasses
import hashlib

import numpy as np
import pytest

from chain import constants as C
from chain.builder import build_problem_block
from chain.consensus import period_end
from chain.errors import (
    SizeBeyondNetworkCap,
    TooManyTuples,
    TupleDuplicate,
    TupleMalformed,
    TupleNotByContributor,
    TupleSignatureInvalid,
    TupleWindowClosed,
)
from chain.limits import check_message_sizes
from chain.signing import EMPTY_SIGNATURE, sign
from chain.state import get_meta, get_problem
from chain.devnet import Devnet, DevnetConfig
from chain.tuples import check_extra_tuple, check_tuple_window
from chain.types import TestTuple
from del_embed.integer import f_int
from factories import accept, flip, multi_tuple_proof, next_block


def fresh() -> Devnet:
    """A devnet whose Problem block is not committed yet: T_p is running."""
    return Devnet(DevnetConfig())


def extra_tuple(d: Devnet, seed: int = 1, keys=None, *, chain_id: bytes | None = None, **changes) -> TestTuple:
    """A tuple on other inputs (stand-in id) over the devnet's DEL, labelled at random."""
    truth = np.random.default_rng(seed).integers(0, d.cfg.num_classes, d.cfg.m)
    first = d.proposal.first_tuple
    keys = keys or d.creator
    tup = TestTuple(hashlib.sha256(b"extra inputs %d" % seed).digest(), first.del_id, d.cfg.m,
                    f_int(d.del_model, truth), keys.public_key, EMPTY_SIGNATURE)
    tup = dataclasses.replace(tup, **changes)
    return sign(tup, keys, d.chain_id if chain_id is None else chain_id)


def problem_block(d: Devnet, tuples):
    return build_problem_block(d.proposal, d.committer_for(0), period_end(d.params, 0), d.env, extra_tuples=tuples)


# ---------------------------------------------------------------------------
# Attacks on the Problem block's extra tuples
# ---------------------------------------------------------------------------
def test_invalid_extra_tuple_by_a_stranger():
    d = fresh()
    stranger = d.improver_keys[0]
    with pytest.raises(TupleNotByContributor) as err:  # invalid: validly signed, but not by the contributor
        problem_block(d, [extra_tuple(d, keys=stranger)])
    assert err.value.signer == stranger.public_key


def test_invalid_extra_tuple_with_a_bad_signature():
    d = fresh()
    tup = extra_tuple(d)
    with pytest.raises(TupleSignatureInvalid):
        problem_block(d, [dataclasses.replace(tup, signature=flip(tup.signature))])


def test_invalid_extra_tuple_signed_for_another_chain():
    d = fresh()
    with pytest.raises(TupleSignatureInvalid):  # invalid: signed with chain id 0, as the first tuple is
        problem_block(d, [extra_tuple(d, chain_id=C.ZERO_HASH)])


def test_invalid_extra_tuple_repeating_the_first_tuples_inputs():
    d = fresh()
    with pytest.raises(TupleDuplicate) as err:  # invalid: the same items would count twice
        problem_block(d, [extra_tuple(d, z_id=d.proposal.first_tuple.z_id)])
    assert err.value.index == 0


def test_invalid_extra_tuple_repeated():
    d = fresh()
    tup = extra_tuple(d)
    with pytest.raises(TupleDuplicate) as err:
        problem_block(d, [tup, tup])
    assert err.value.index == 1


def test_invalid_extra_tuple_whose_del_does_not_fit():
    d = fresh()
    with pytest.raises(TupleMalformed):  # invalid: m differs from the DEL's
        problem_block(d, [extra_tuple(d, m=d.cfg.m + 1)])


def test_invalid_extra_tuple_with_a_short_embedding():
    d = fresh()
    tup = extra_tuple(d)
    with pytest.raises(TupleMalformed):
        problem_block(d, [extra_tuple(d, y_t=tup.y_t[:-1])])


def test_invalid_extra_tuple_beyond_the_tuple_limit():
    d = fresh()
    earlier = [d.proposal.first_tuple] + [extra_tuple(d, seed=s) for s in range(1, C.MAX_TUPLES)]
    with pytest.raises(TooManyTuples):
        check_extra_tuple(d.proposal, earlier, extra_tuple(d, seed=C.MAX_TUPLES), d.env)


def test_invalid_extra_tuple_that_no_proof_could_carry():
    """With ``max_ambiguous`` set so that one tuple's largest PoI just fits the proofs topic,
    a second tuple (another embedding and ambiguous set) makes it too large to gossip."""
    d = fresh()
    params = d.params
    low, high = 0, C.MAX_AMBIGUOUS  # the largest max_ambiguous whose one-tuple problem fits
    while low < high:
        mid = (low + high + 1) // 2
        try:
            check_message_sizes(dataclasses.replace(params, max_ambiguous=mid), (d.proposal.first_tuple,), 0)
            low = mid
        except SizeBeyondNetworkCap:
            high = mid - 1
    tight = dataclasses.replace(d.proposal, params=dataclasses.replace(params, max_ambiguous=low))
    with pytest.raises(SizeBeyondNetworkCap):
        check_extra_tuple(tight, [tight.first_tuple], extra_tuple(d, chain_id=tight.chain_id), d.env)


def test_invalid_tuple_once_t_p_is_over():
    d = fresh()
    end = period_end(d.params, 0)
    check_tuple_window(d.params, started=False, now=end - 1)  # the last second of T_p
    with pytest.raises(TupleWindowClosed):
        check_tuple_window(d.params, started=False, now=end)
    with pytest.raises(TupleWindowClosed):
        check_tuple_window(d.params, started=True, now=end - 1)  # the Problem block exists


# ---------------------------------------------------------------------------
# What an extra tuple does
# ---------------------------------------------------------------------------
def test_an_extra_tuple_joins_the_test_set_that_proofs_are_scored_on():
    d = fresh()
    truths = [d.truth, np.random.default_rng(1).integers(0, d.cfg.num_classes, d.cfg.m)]
    block, outcome = problem_block(d, [extra_tuple(d, seed=1)])
    d._accept(block, outcome)
    d.bond_validators()
    assert len(get_problem(d.state).tuples) == 2
    assert get_meta(d.state).d_c == (C.PPB, C.PPB)
    proof = multi_tuple_proof(d, d.improver_keys[0], truths, "both tuples right")
    accept(d, next_block(d, anchor=proof.anchor))
    accept(d, next_block(d, settlement=proof.reveal))
    settlement = d.receipts[-1].settlement
    assert settlement.outcome == "settled" and len(settlement.distances) == 2
