"""Test tuples: what makes one fit its problem, and the one rule for a tuple added during T_p.

The design's ``submitTestSet``: during T_p the problem's contributor may add test tuples
``(Z, f, y_t)`` besides the proposal's first one; the Problem block, committed once T_p is
over, carries those it received (``ProblemBody.extra_tuples``), and they join the test set
every PoI is scored on (one embedding and one ``d_c`` per tuple, the mean reward). An extra
tuple signs for the chain id (the first signs for ``0^32``, before the chain id exists), so
it cannot be replayed onto another problem.
"""

from __future__ import annotations

from typing import Sequence

from del_embed.integer import IntegerDEL, IntegerDELError

from . import constants as C
from .consensus import period_end
from .errors import (
    TooManyTuples,
    TupleDuplicate,
    TupleMalformed,
    TupleNotByContributor,
    TupleSignatureInvalid,
    TupleWindowClosed,
)
from .limits import check_message_sizes
from .outcome import Env
from .signing import is_valid_signature
from .types import ProblemParams, Proposal, TestTuple


def check_tuple(tup: TestTuple, params: ProblemParams, env: Env) -> IntegerDEL:
    """The tuple's DEL artifact parses and fits the tuple (``m``, ``n``) and the problem (classes)."""
    try:
        model = env.load_del(tup.del_id)
    except IntegerDELError as exc:
        raise TupleMalformed(f"DEL artifact is malformed: {exc}", del_id=tup.del_id) from None
    if model.m != tup.m or model.num_classes != params.num_classes:
        raise TupleMalformed("DEL artifact does not fit its tuple", m=tup.m, del_m=model.m)
    if len(tup.y_t) != model.n:
        raise TupleMalformed("y_t length differs from the DEL's n", len_y=len(tup.y_t), n=model.n)
    return model


def check_extra_tuple(proposal: Proposal, earlier: Sequence[TestTuple], tup: TestTuple, env: Env) -> None:
    """The one rule for a test tuple added during T_p after the tuples ``earlier`` (the
    proposal's first one, then the extra ones before it): signed by the contributor (the
    proposal's creator) for this chain, on inputs no tuple has yet, within ``MAX_TUPLES``,
    fitting its DEL, and leaving every proof of the problem small enough to gossip."""
    if tup.contributor != proposal.creator:
        raise TupleNotByContributor(tup.contributor, proposal.creator)
    if not is_valid_signature(tup, proposal.chain_id):
        raise TupleSignatureInvalid(tup.contributor)
    if len(earlier) >= C.MAX_TUPLES:
        raise TooManyTuples(len(earlier) + 1, C.MAX_TUPLES)
    for index, other in enumerate(earlier):
        if other.z_id == tup.z_id:
            raise TupleDuplicate(tup.z_id, index)
    params = proposal.params
    check_tuple(tup, params, env)
    check_message_sizes(params, (*earlier, tup), proposal.holdout.m_h if proposal.holdout is not None else 0)


def check_tuple_window(params: ProblemParams, *, started: bool, now: float) -> None:
    """A tuple is taken only during T_p: before the Problem block exists and before period 0
    ends (from then on the block may be committed, and a tuple might miss it)."""
    end = period_end(params, 0)
    if started or now >= end:
        raise TupleWindowClosed(int(now), end)
