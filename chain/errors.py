"""One exception hierarchy for everything the protocol can reject.

Each subclass keeps the offending values as attributes and names them in its
message, so a node's log says exactly why a peer's block or tx was refused.
"""

from __future__ import annotations

from typing import Any


class ChainError(Exception):
    """Base of every protocol error."""


class DecodeError(ChainError):
    """Bytes are not the canonical encoding of a known object."""


class InvalidSignature(ChainError):
    """A signature does not verify for the object, its domain and its chain."""


class MissingContent(ChainError):
    """A block needs content (a DEL artifact) the node does not hold yet: defer, don't reject."""

    def __init__(self, content_id: bytes) -> None:
        self.content_id = content_id
        super().__init__(f"content {content_id.hex()} is not available")


class InvalidBlock(ChainError):
    """A block breaks a consensus rule."""

    def __init__(self, message: str, **values: Any) -> None:
        self.values = values
        detail = ", ".join(f"{k}={_short(v)}" for k, v in values.items())
        super().__init__(f"{message} ({detail})" if detail else message)


def _short(value: Any) -> str:
    if isinstance(value, bytes):
        return value.hex()[:16]
    return repr(value)


class InvalidHeader(InvalidBlock):
    """Height, parent, chain, period, timestamp, committer or roots are wrong."""


class InvalidBody(InvalidBlock):
    """The body does not hash to the header or is the wrong kind."""


class InvalidTransaction(InvalidBlock):
    """A transaction's signature, nonce, balance or payload is wrong."""


class InvalidProblem(InvalidBlock):
    """A problem proposal or test tuple is malformed."""


class InvalidAnchor(InvalidBlock):
    """A PoI or one of its votes cannot be anchored."""


class InvalidSettlement(InvalidBlock):
    """A reveal does not belong to the pending anchor or arrives out of its period."""


class InvalidSeason(InvalidBlock):
    """A holdout reveal or a new sealed holdout is wrong."""


class InvalidStateRoot(InvalidBlock):
    """The state root in the header differs from the one computed."""


# --- Header-first checks, fork choice and committer equivocation (issue 14, findings 2 and 3) ---
class UnknownParent(ChainError):
    """A block whose header checks pass builds on a block this node has not seen: sync, don't reject."""

    def __init__(self, parent: bytes) -> None:
        self.parent = parent
        super().__init__(f"unknown parent {parent.hex()[:16]}")


class FutureBlock(ChainError):
    """A validly signed header stamped ahead of the receiver's clock (plus drift): defer it."""

    def __init__(self, timestamp: int, limit: float) -> None:
        self.timestamp = timestamp
        self.limit = limit
        super().__init__(f"block stamped {timestamp}, after {limit:.0f}")


class WrongChain(InvalidHeader):
    """The header names another chain."""

    def __init__(self, chain_id: bytes, expected: bytes) -> None:
        super().__init__("wrong chain id", chain_id=chain_id, expected=expected)


class BadCommitterSignature(InvalidHeader):
    """The header's signature does not verify under its committer key."""

    def __init__(self, committer: bytes) -> None:
        super().__init__("bad committer signature", committer=committer)


class CommitterNotAllowed(InvalidHeader):
    """The key is not a committer of the problem, or not for this period at this timestamp."""

    def __init__(self, committer: bytes, period: int, timestamp: int) -> None:
        super().__init__("committer may not commit this period at this time",
                         committer=committer, period=period, timestamp=timestamp)


class CommitterEjected(InvalidHeader):
    """The committer was ejected for equivocating; its blocks are invalid from then on."""

    def __init__(self, committer: bytes) -> None:
        super().__init__("committer was ejected for equivocation", committer=committer)


class BodyHashMismatch(InvalidBody):
    """The body bytes do not hash to the header's ``body_hash``."""

    def __init__(self, header: bytes, computed: bytes) -> None:
        super().__init__("body hash differs from the header", header=header, computed=computed)


class AnchorOverProblemLimits(InvalidAnchor):
    """An anchor holds more ambiguous positions or votes than the problem allows.

    Checked on the raw lists of a block body before any object is built, and again
    (same function) on a decoded anchor.
    """

    def __init__(self, what: str, count: int, limit: int) -> None:
        super().__init__(f"too many {what}", what=what, count=count, limit=limit)


class CommitterEquivocation(ChainError):
    """A committer signed two different blocks for one period; ``first`` was seen before ``second``.

    Not an ``InvalidBlock``: the second block may be valid on its own. The node drops it
    (does not relay it) and can put both headers on chain as a ``ReportEquivocation``.
    """

    def __init__(self, first: Any, second: Any) -> None:
        self.first = first
        self.second = second
        super().__init__(f"committer {first.committer.hex()[:16]} signed two blocks for period {first.period}")


class InvalidEquivocationReport(InvalidTransaction):
    """A ``ReportEquivocation`` is not proof that a still-active committer signed twice for one period."""


# --- Issue 14, findings 1 and 6: quorum of stake, the contributor's bond --------------------
class QuorumNotReached(InvalidAnchor):
    """An anchor's votes come from less than the problem's quorum of the bonded stake."""

    def __init__(self, stake: int, total: int, quorum_ppb: int) -> None:
        self.stake = stake
        self.total = total
        self.quorum_ppb = quorum_ppb
        super().__init__("votes below the quorum of bonded stake", stake=stake, total=total, quorum_ppb=quorum_ppb)


class QuorumOutOfRange(InvalidProblem):
    """A problem's quorum is not a strict majority of the stake (or exceeds all of it)."""

    def __init__(self, quorum_ppb: int) -> None:
        self.quorum_ppb = quorum_ppb
        super().__init__("quorum must be above half and at most all of the bonded stake", quorum_ppb=quorum_ppb)


class ContributorBondTooSmall(InvalidProblem):
    """The holdout contributor's bond is below what one season can mint."""

    def __init__(self, bond: int, season_mint: int) -> None:
        self.bond = bond
        self.season_mint = season_mint
        super().__init__("contributor bond below what a season can mint", bond=bond, season_mint=season_mint)


# --- Typed rules of issue 14, findings 4, 5, 9, 10 and 11 (one class per validity rule) ---------
class FeeTooLow(InvalidTransaction):
    """A transaction pays less than the problem's minimum fee (free spam)."""

    def __init__(self, fee: int, required: int) -> None:
        self.fee, self.required = fee, required
        super().__init__("fee below the problem's minimum", fee=fee, required=required)


class BalanceOverflow(InvalidTransaction):
    """A credit would push an account past the largest amount the chain encodes."""

    def __init__(self, address: bytes, total: int, amount: int, limit: int) -> None:
        self.address, self.total, self.amount, self.limit = address, total, amount, limit
        super().__init__("credit past the amount bound", address=address, total=total, amount=amount, limit=limit)


class ModelClaimTaken(InvalidTransaction):
    """A ``RegisterDigest`` repeats a claim already on chain (a claim binds its prover, so a
    copy only re-registers the claim for the prover who made it)."""

    def __init__(self, claim: bytes) -> None:
        self.claim = claim
        super().__init__("model claim already registered", claim=claim)


class ModelNotClaimed(InvalidAnchor):
    """A PoI's model was not claimed by its prover in an earlier block."""

    def __init__(self, prover: bytes, digest: bytes, claim: bytes, registered_height: int | None) -> None:
        self.prover, self.digest, self.claim, self.registered_height = prover, digest, claim, registered_height
        super().__init__("model not claimed by the prover in an earlier block", prover=prover, digest=digest,
                         claim=claim, registered_height=registered_height)


class BondBelowMinimum(InvalidAnchor):
    """A vote comes from a bond below the problem's validator bond (e.g. halved by slashing)."""

    def __init__(self, validator: bytes, amount: int, required: int) -> None:
        self.validator, self.amount, self.required = validator, amount, required
        super().__init__("vote from a bond below the validator bond", validator=validator, amount=amount,
                         required=required)


class BlockTransactionsTooLarge(InvalidBody):
    """A block's transactions exceed the consensus byte budget."""

    def __init__(self, size: int, limit: int) -> None:
        self.size, self.limit = size, limit
        super().__init__("transactions exceed the block's byte budget", size=size, limit=limit)


class SupplyTooLarge(InvalidProblem):
    """Genesis plus everything the problem can mint does not fit the amount encoding."""

    def __init__(self, genesis: int, mintable: int, limit: int) -> None:
        self.genesis, self.mintable, self.limit = genesis, mintable, limit
        super().__init__("genesis plus mintable supply exceeds the amount bound", genesis=genesis,
                         mintable=mintable, limit=limit)


class SizeBeyondNetworkCap(InvalidProblem):
    """The largest object of some kind a problem allows would not fit its network cap."""

    def __init__(self, kind: str, size: int, cap: int) -> None:
        self.kind, self.size, self.cap = kind, size, cap
        super().__init__(f"the largest {kind} does not fit its network cap", kind=kind, size=size, cap=cap)


class MinimumFeeMissing(InvalidProblem):
    """A problem must charge a positive minimum fee, or its chain takes free spam."""

    def __init__(self, min_fee: int) -> None:
        self.min_fee = min_fee
        super().__init__("min_fee must be at least 1", min_fee=min_fee)


# --- Issue 16: the exits a user takes (validator bond, channel deposit), each rule its own class ----
class ValidatorAlreadyBonded(InvalidTransaction):
    """A ``RegisterValidator`` from a key that already has a bond (active or unbonding)."""

    def __init__(self, validator: bytes) -> None:
        self.validator = validator
        super().__init__("validator already bonded", validator=validator)


class NoBondToWithdraw(InvalidTransaction):
    """A ``WithdrawBond`` from a key without a bond: nothing to unbond or withdraw."""

    def __init__(self, validator: bytes) -> None:
        self.validator = validator
        super().__init__("no bond to withdraw", validator=validator)


class BondStillUnbonding(InvalidTransaction):
    """A ``WithdrawBond`` before the bond's unbonding period is over."""

    def __init__(self, until_period: int, period: int) -> None:
        self.until_period, self.period = until_period, period
        super().__init__(f"bond still unbonding until period {until_period}", until=until_period, period=period)


class NoOpenChannel(InvalidTransaction):
    """A ``CloseChannel`` for a payer and runner with no open channel."""

    def __init__(self, runner: bytes) -> None:
        self.runner = runner
        super().__init__("no open channel to close", runner=runner)


class ChannelNotExpired(InvalidTransaction):
    """A ``CloseChannel`` before the channel's ``expires_period``: the runner may still redeem."""

    def __init__(self, expires_period: int, period: int) -> None:
        self.expires_period, self.period = expires_period, period
        super().__init__(f"channel not expired until period {expires_period}", expires=expires_period,
                         period=period)


class ParameterOutOfRange(InvalidProblem):
    """A numeric problem parameter outside the range the protocol works in (``high`` None: no bound above)."""

    def __init__(self, name: str, value: int, low: int, high: int | None) -> None:
        self.name, self.value, self.low, self.high = name, value, low, high
        bound = f"at least {low}" if high is None else f"in {low}..{high}"
        super().__init__(f"{name} must be {bound}", name=name, value=value)


# --- Committers by transaction (issue 17): one class per rule ------------------------------------
class CommitterSetFixed(InvalidTransaction):
    """The problem has no committer bond: its committer list is fixed in the proposal."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        super().__init__("the problem's committer set is fixed", kind=kind)


class CommitterAlreadyRegistered(InvalidTransaction):
    """A key registers as committer once (its record stays, so any past period's set can be read)."""

    def __init__(self, committer: bytes) -> None:
        self.committer = committer
        super().__init__("key already registered as a committer", committer=committer)


class CommitterBondUnpaid(InvalidTransaction):
    """The sender's spendable balance is below the committer bond."""

    def __init__(self, committer: bytes, balance: int, bond: int) -> None:
        self.committer, self.balance, self.bond = committer, balance, bond
        super().__init__("balance below the committer bond", committer=committer, balance=balance, bond=bond)


class CommitterSetFull(InvalidTransaction):
    """The set in force at the joining period already holds ``MAX_COMMITTERS`` keys."""

    def __init__(self, size: int, limit: int) -> None:
        self.size, self.limit = size, limit
        super().__init__("committer set full", size=size, limit=limit)


class NotACommitter(InvalidTransaction):
    """A ``LeaveCommitter`` (or an equivocation report) names a key with no committer record,
    or one whose bond was already returned."""

    def __init__(self, committer: bytes) -> None:
        self.committer = committer
        super().__init__("not a committer with a bond or a place to leave", committer=committer)


class LastCommitter(InvalidTransaction):
    """Leaving would leave no committer in force: the chain would stop."""

    def __init__(self, committer: bytes, period: int) -> None:
        self.committer, self.period = committer, period
        super().__init__("the last committer may not leave", committer=committer, period=period)


class CommitterBondLocked(InvalidTransaction):
    """The bond of a committer that left comes back only ``committer_delay`` periods after it left
    the set, so evidence of its last blocks can still burn it."""

    def __init__(self, committer: bytes, available_period: int, period: int) -> None:
        self.committer, self.available_period, self.period = committer, available_period, period
        super().__init__("committer bond still locked", committer=committer, available_period=available_period,
                         period=period)


class CommitterParamsOutOfRange(InvalidProblem):
    """A bonded (or miss-limited) committer set needs a delay of 1..MAX_COMMITTER_DELAY periods."""

    def __init__(self, delay: int, limit: int) -> None:
        self.delay, self.limit = delay, limit
        super().__init__("committer delay out of range", delay=delay, limit=limit)


class UnknownCommitter(InvalidHeader):
    """A block whose parent this node lacks, signed by a key that never was a committer on its
    chain: with no parent state to read the set from, only keys with a committer record pass."""

    def __init__(self, committer: bytes) -> None:
        self.committer = committer
        super().__init__("block of an unknown parent by a key that never was a committer", committer=committer)


# --- Issue 16: seasons sealed ahead, the end of the last season, test tuples added during T_p ---
class NoSeasons(InvalidTransaction):
    """A ``NewHoldout`` on a problem without seasons: nothing would ever reveal it."""

    def __init__(self) -> None:
        super().__init__("this problem has no seasons")


class NotContributor(InvalidTransaction):
    """A ``NewHoldout`` from another key than the problem's contributor, who alone knows ``x_h``."""

    def __init__(self, sender: bytes, contributor: bytes) -> None:
        self.sender, self.contributor = sender, contributor
        super().__init__("only the contributor seals a holdout", sender=sender, contributor=contributor)


class HoldoutReused(InvalidTransaction):
    """A holdout whose inputs or commitment this chain has sealed before: once revealed, its labels
    are public, so a later season on it would pay for answers anyone can look up."""

    def __init__(self, what: str, value: bytes, season: int) -> None:
        self.what, self.value, self.season = what, value, season
        super().__init__(f"holdout {what} already sealed for season {season}", value=value, season=season)


class ContributorBondUnpaid(InvalidTransaction):
    """The contributor's spendable balance is below the bond each sealed holdout locks."""

    def __init__(self, balance: int, bond: int) -> None:
        self.balance, self.bond = balance, bond
        super().__init__("balance below the contributor bond", balance=balance, bond=bond)


class TooManySeasonsSealed(InvalidTransaction):
    """More holdouts sealed ahead of the current season than the chain keeps records for."""

    def __init__(self, sealed: int, limit: int) -> None:
        self.sealed, self.limit = sealed, limit
        super().__init__(f"{sealed} seasons already sealed ahead (at most {limit})", sealed=sealed, limit=limit)


class NoOpenSeason(InvalidAnchor):
    """A PoI while no season with a sealed holdout is open (a reveal window, or after the last season)."""

    def __init__(self, period: int, season: int) -> None:
        self.period, self.season = period, season
        super().__init__("no open season with a sealed holdout", period=period, season=season)


class InvalidTestTuple(InvalidProblem):
    """An extra test tuple (submitted during T_p, carried in the Problem block) is refused."""

    def __init__(self, message: str, **values: Any) -> None:
        super().__init__(message, **values)


class TupleNotByContributor(InvalidTestTuple):
    def __init__(self, signer: bytes, contributor: bytes) -> None:
        self.signer, self.contributor = signer, contributor
        super().__init__("test tuple not signed by the problem's contributor", signer=signer, contributor=contributor)


class TupleSignatureInvalid(InvalidTestTuple):
    def __init__(self, signer: bytes) -> None:
        self.signer = signer
        super().__init__("test tuple signature does not verify for this chain", signer=signer)


class TupleDuplicate(InvalidTestTuple):
    """Inputs ``Z`` already in the test set: the tuple would count the same items twice."""

    def __init__(self, z_id: bytes, index: int) -> None:
        self.z_id, self.index = z_id, index
        super().__init__(f"test tuple repeats the inputs of tuple {index}", z_id=z_id, index=index)


class TupleMalformed(InvalidTestTuple):
    """The tuple's DEL artifact is malformed or does not fit the tuple or the problem."""

    def __init__(self, reason: str, **values: Any) -> None:
        self.reason = reason
        super().__init__(f"test tuple malformed: {reason}", **values)


class TupleWindowClosed(InvalidTestTuple):
    """A tuple offered once T_p is over (the Problem block exists or may be committed)."""

    def __init__(self, now: int, end: int) -> None:
        self.now, self.end = now, end
        super().__init__("test tuples are taken only during T_p", now=now, end=end)


class TooManyTuples(InvalidTestTuple):
    def __init__(self, count: int, limit: int) -> None:
        self.count, self.limit = count, limit
        super().__init__(f"{count} test tuples (at most {limit})", count=count, limit=limit)
