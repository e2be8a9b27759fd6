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
