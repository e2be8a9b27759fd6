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
