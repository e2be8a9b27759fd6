"""Typed errors of the inference market: a runner's refusals and the paying user's failures.

A runner refuses a call with a wire code (``["err", code, message]`` on ``/daimon/infer/1``,
``Rejected.rule`` through the node's RPC). Each code is one ``InferError`` subclass here,
and ``refusal(code, message)`` is the one place that maps a code back to its class, so a
caller tests the type (or ``voucher_kept``) and never the text.

``voucher_kept`` says whether the runner may still hold the call's voucher as payment:
False for every refusal made before the voucher was accepted, and for ``run_failed``
(the runner rolled the voucher back); True for ``replayed`` (the runner already holds a
voucher at least that high) and for codes this version does not know (assume the worst).
The paying user's ledger may reuse the amount of a voucher the runner did not keep.
"""

from __future__ import annotations

from typing import ClassVar

from daimon_node.errors import DaimonError


class InferError(DaimonError):
    """A refused or failed inference call; ``code`` is its wire code."""

    code: ClassVar[str] = "error"
    voucher_kept: ClassVar[bool] = True

    def __init__(self, message: str, code: str | None = None) -> None:
        self.message = message
        self.wire_code = code if code is not None else self.code
        super().__init__(f"{self.wire_code}: {message}")


class BadRequest(InferError):
    code, voucher_kept = "bad_request", False


class BadInput(InferError):
    """Inputs that do not fit the problem's ``InputSpec`` (checked before any payment)."""

    code, voucher_kept = "bad_input", False


class NotServing(InferError):
    code, voucher_kept = "not_serving", False


class Forged(InferError):
    code, voucher_kept = "forged", False


class NoChannel(InferError):
    code, voucher_kept = "no_channel", False


class StaleEpoch(InferError):
    code, voucher_kept = "stale_epoch", False


class ChannelExpiring(InferError):
    code, voucher_kept = "channel_expiring", False


class Overspent(InferError):
    code, voucher_kept = "overspent", False


class Underpaid(InferError):
    code, voucher_kept = "underpaid", False


class Replayed(InferError):
    """The runner already holds a voucher at or above this one: nothing to give back."""

    code, voucher_kept = "replayed", True


class RunFailed(InferError):
    """The sandbox failed on the model; the runner forgot the voucher (no answer, no payment)."""

    code, voucher_kept = "run_failed", False


class BadReply(InferError):
    """The runner answered something that is not a reply of the protocol."""

    code, voucher_kept = "bad_reply", True


REFUSALS: dict[str, type[InferError]] = {
    cls.code: cls
    for cls in (BadRequest, BadInput, NotServing, Forged, NoChannel, StaleEpoch, ChannelExpiring,
                Overspent, Underpaid, Replayed, RunFailed, BadReply)
}


def refusal(code: str, message: str) -> InferError:
    """The typed error of a runner's refusal ``code`` (an unknown code: a plain ``InferError``)."""
    cls = REFUSALS.get(code)
    return cls(message) if cls is not None else InferError(message, code)


# --- the paying user's side ------------------------------------------------------------------
class ChannelClientError(DaimonError):
    """A paid call the user's side refused to make or finish."""


class StaleModel(ChannelClientError):
    """The runner's model digest is not the model the user pays for (confirmed, or provisional)."""


class PriceAboveCap(ChannelClientError):
    def __init__(self, price: int, cap: int) -> None:
        super().__init__(f"runner now asks {price} per input, above --max-price {cap}")
        self.price = price
        self.cap = cap


class ChannelNotOpen(ChannelClientError):
    """No open channel to the runner, even after an ``OpenChannel`` was sent and included."""


class PaidMismatch(ChannelClientError):
    """The runner says more was paid than the user's ledger signed: refuse to pay again."""

    def __init__(self, runner_says: int, ledger_says: int, ledger: str) -> None:
        super().__init__(f"the runner says {runner_says} was paid, our record says {ledger_says}; "
                         f"refusing to pay again (check {ledger})")
        self.runner_says = runner_says
        self.ledger_says = ledger_says
