"""The records chain state holds, each a canonical schema (docs/protocol.md "State and its root").

``chain.state`` keeps them in a flat key-value map under the key namespaces it defines;
this module only says what each record holds and why.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from . import constants as C
from .codec import Bytes, ListOf, Optional_, Schema, SInt, Struct, schema
from .fields import ADDRESS, AMOUNT, HASH, U32, U64
from .payloads import OfferService
from .proofs import Ambiguous, SealedHoldout
from .types import Anchor, ProblemParams, Proposal, TestTuple


@schema
@dataclass(frozen=True)
class Account(Schema):
    balance: int  # spendable base units
    locked: int  # base units that are not spendable (bonds, unvested rewards)
    nonce: int

    FIELDS = (("balance", AMOUNT), ("locked", AMOUNT), ("nonce", U64))


EMPTY_ACCOUNT: Final[Account] = Account(0, 0, 0)


@schema
@dataclass(frozen=True)
class DigestRecord(Schema):
    owner: bytes  # address
    height: int  # block that registered it

    FIELDS = (("owner", ADDRESS), ("height", U64))


@schema
@dataclass(frozen=True)
class Bond(Schema):
    amount: int
    since_height: int  # votes count from blocks after this one
    unbond_period: int  # 0 while active; else the period from which it may be withdrawn

    FIELDS = (("amount", AMOUNT), ("since_height", U64), ("unbond_period", U32))


@schema
@dataclass(frozen=True)
class BestModel(Schema):
    digest: bytes
    owner: bytes  # address
    height: int  # block that settled it
    d_ppb: tuple[int, ...]  # its distance per tuple

    FIELDS = (("digest", HASH), ("owner", ADDRESS), ("height", U64), ("d_ppb", ListOf(U32, C.MAX_TUPLES)))


@schema
@dataclass(frozen=True)
class PendingAnchor(Schema):
    """An anchored PoI awaiting its reveal in the next period."""

    anchor: Anchor
    height: int
    period: int
    improver_bond: int  # locked from the improver at anchoring
    quorum_stake: int  # the bonded stake its matching votes must reach to settle (fixed at anchoring)

    FIELDS = (
        ("anchor", Struct(Anchor)),
        ("height", U64),
        ("period", U32),
        ("improver_bond", AMOUNT),
        ("quorum_stake", AMOUNT),
    )


@schema
@dataclass(frozen=True)
class LockedReward(Schema):
    """A reward minted locked in a season; it vests or burns when the holdout opens."""

    address: bytes
    amount: int
    settlement_height: int

    FIELDS = (("address", ADDRESS), ("amount", AMOUNT), ("settlement_height", U64))


@schema
@dataclass(frozen=True)
class SeasonImprovement(Schema):
    """An improvement settled in the current season, with what the judge needs.

    ``holdout_labels`` are its predictions on ``Z_h`` (``m_h`` bytes, so kept under
    its own state key). ``reward`` and ``voters`` (paid matching validators, in
    position order) let the judge re-price it as if burned improvements had never
    settled; ``improver_bond`` stays locked until the judge.
    """

    digest: bytes
    owner: bytes
    settlement_height: int
    d_ppb: tuple[int, ...]
    holdout_labels: bytes
    holdout_ambiguous: tuple[int, ...]
    reward: int
    voters: tuple[bytes, ...]
    improver_bond: int

    FIELDS = (
        ("digest", HASH),
        ("owner", ADDRESS),
        ("settlement_height", U64),
        ("d_ppb", ListOf(U32, C.MAX_TUPLES)),
        ("holdout_labels", Bytes(max_len=C.MAX_LABELS)),
        ("holdout_ambiguous", ListOf(U32, C.MAX_AMBIGUOUS)),
        ("reward", AMOUNT),
        ("voters", ListOf(ADDRESS, C.MAX_VOTES_PER_BLOCK)),
        ("improver_bond", AMOUNT),
    )


@schema
@dataclass(frozen=True)
class SeasonReference(Schema):
    """The confirmed model's predictions on this season's ``Z_h``, as the first PoI that
    settled in the season carried them (checked by a quorum of its voters); every
    later PoI of the season must carry the same, and the judge compares against them."""

    labels: bytes
    ambiguous: tuple[Ambiguous, ...]

    FIELDS = (("labels", Bytes(max_len=C.MAX_LABELS)), ("ambiguous", ListOf(Struct(Ambiguous), C.MAX_AMBIGUOUS)))


MAX_SEASON_IMPROVEMENTS: Final[int] = 4096  # settled improvements one season can record
MAX_SEASON_LOCKED: Final[int] = 1 << 16  # locked reward entries one season can record


@schema
@dataclass(frozen=True)
class Season(Schema):
    index: int  # 0-based
    start_period: int  # first competition period of the season
    holdout: SealedHoldout | None
    improvement_count: int  # settled improvements, stored under ``season_improvement_key``
    locked: tuple[LockedReward, ...]
    confirmed_error_ppb: int  # the confirmed model's error on the last revealed holdout (PPB = none); shown, not judged
    sealed_ahead: int = 0  # holdouts sealed for the seasons after this one, under ``"n" || index + k`` (k = 1..)

    FIELDS = (
        ("index", U32),
        ("start_period", U32),
        ("holdout", Optional_(Struct(SealedHoldout))),
        ("improvement_count", U32),
        ("locked", ListOf(Struct(LockedReward), MAX_SEASON_LOCKED)),
        ("confirmed_error_ppb", U32),
        ("sealed_ahead", U32),
    )


@schema
@dataclass(frozen=True)
class HoldoutMark(Schema):
    """A holdout's inputs or commitment this chain has sealed, and for which season: neither
    may be sealed again (its reveal makes the labels public)."""

    season: int

    FIELDS = (("season", U32),)


@schema
@dataclass(frozen=True)
class ChainMeta(Schema):
    """What changes with every block: height, head, distances, best models, pending work."""

    height: int
    period: int
    d_c: tuple[int, ...]
    confirmed_d_c: tuple[int, ...]
    provisional: BestModel | None
    confirmed: BestModel | None
    pending: PendingAnchor | None
    season: Season | None
    burned: int  # base units burned so far
    minted: int  # base units minted so far (genesis excluded)
    bonded: int  # validator stake that may vote: the sum of bonds not unbonding

    FIELDS = (
        ("height", U64),
        ("period", U32),
        ("d_c", ListOf(U32, C.MAX_TUPLES)),
        ("confirmed_d_c", ListOf(U32, C.MAX_TUPLES)),
        ("provisional", Optional_(Struct(BestModel))),
        ("confirmed", Optional_(Struct(BestModel))),
        ("pending", Optional_(Struct(PendingAnchor))),
        ("season", Optional_(Struct(Season))),
        ("burned", AMOUNT),
        ("minted", AMOUNT),
        ("bonded", AMOUNT),
    )


@schema
@dataclass(frozen=True)
class ProblemRecord(Schema):
    proposal: Proposal
    tuples: tuple[TestTuple, ...]
    contributor: bytes  # address whose bond backs the holdout

    FIELDS = (
        ("proposal", Struct(Proposal)),
        ("tuples", ListOf(Struct(TestTuple), C.MAX_TUPLES)),
        ("contributor", ADDRESS),
    )

    @property
    def params(self) -> ProblemParams:
        return self.proposal.params

    @property
    def chain_id(self) -> bytes:
        return self.proposal.chain_id


@schema
@dataclass(frozen=True)
class Offer(Schema):
    offer: OfferService
    height: int

    FIELDS = (("offer", Struct(OfferService)), ("height", U64))


@schema
@dataclass(frozen=True)
class Reputation(Schema):
    score: int
    up: int
    down: int

    FIELDS = (("score", SInt(64)), ("up", U64), ("down", U64))


@schema
@dataclass(frozen=True)
class RatingMark(Schema):
    period: int  # last period the rater rated the target

    FIELDS = (("period", U32),)


@schema
@dataclass(frozen=True)
class Channel(Schema):
    """A payment channel from a payer to a runner (docs/market.md).

    ``deposit`` is locked in the payer's account; ``redeemed`` of it has been paid to
    the runner. Open while ``deposit > 0``; closing refunds the rest and bumps ``epoch``.
    """

    deposit: int
    redeemed: int
    expires_period: int
    epoch: int

    FIELDS = (("deposit", AMOUNT), ("redeemed", AMOUNT), ("expires_period", U32), ("epoch", U32))

    @property
    def is_open(self) -> bool:
        return self.deposit > 0


@schema
@dataclass(frozen=True)
class Ejection(Schema):
    """A committer proven to have signed two blocks for one period (issue 14)."""

    period: int  # the period it signed twice
    height: int  # the block that carried the report

    FIELDS = (("period", U32), ("height", U64))

