"""The paying user's side of a payment channel: its ledger, its vouchers, its refunds.

``ChannelClient.call`` pays a runner for one call of N inputs (docs/market.md): it checks
the runner's quote (the model must be the one paid for, the price within the cap), opens or
tops up the channel when the deposit left cannot pay the call, signs the next voucher
(``cumulative`` = what was paid so far + ``call_cost(price, N)``), records it in the ledger
*before* sending it (signed, it may be redeemed whatever happens next), and sends it with
the inputs. If the runner refuses with an error whose ``voucher_kept`` is False
(``market.errors``), the ledger goes back to what it held, so the next voucher reuses the
amount; the runner can redeem either voucher, never both, because vouchers are cumulative.

The node is reached through ``MarketNode`` (the CLI adapts its RPC client to it), so this
module holds the rules and the CLI only the command line.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Final, Protocol

import numpy as np

from chain.crypto import KeyPair
from chain.payloads import Voucher

from daimon_node.market.errors import ChannelNotOpen, InferError, PaidMismatch, PriceAboveCap, StaleModel
from daimon_node.market.vouchers import make_voucher
from daimon_node.market.messages import Inference, Quote, call_cost, npy_bytes, parse_npy

DEFAULT_DEPOSIT_CALLS: Final[int] = 100  # a new deposit pays this many calls like the current one
RENEW_MARGIN_PERIODS: Final[int] = 2  # top up a channel closable within this many periods


@dataclass(frozen=True)
class ChannelView:
    """A channel as the chain holds it."""

    deposit: int
    redeemed: int
    expires_period: int
    epoch: int
    is_open: bool


class MarketNode(Protocol):
    """What the channel client asks of a node; ``infer`` raises the runner's ``InferError``."""

    def quote(self, chain_id: bytes, runner: bytes, payer: bytes) -> Quote: ...

    def channel(self, chain_id: bytes, payer: bytes, runner: bytes) -> ChannelView | None: ...

    def period(self, chain_id: bytes) -> int: ...

    def open_channel(self, chain_id: bytes, runner: bytes, amount: int, expires_period: int) -> None: ...

    def infer(self, chain_id: bytes, runner: bytes, voucher: Voucher, inputs_npy: bytes) -> Inference: ...


@dataclass(frozen=True)
class LedgerEntry:
    epoch: int
    cumulative: int


class VoucherLedger:
    """The last cumulative amount signed per (chain, runner), kept in one JSON file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _load(self) -> dict[str, dict[str, int]]:
        return json.loads(self.path.read_text()) if self.path.exists() else {}  # type: ignore[no-any-return]

    @staticmethod
    def _key(chain_id: bytes, runner: bytes) -> str:
        return f"{chain_id.hex()}/{runner.hex()}"

    def get(self, chain_id: bytes, runner: bytes) -> LedgerEntry | None:
        entry = self._load().get(self._key(chain_id, runner))
        return None if entry is None else LedgerEntry(int(entry["epoch"]), int(entry["cumulative"]))

    def record(self, chain_id: bytes, runner: bytes, entry: LedgerEntry) -> None:
        ledger = self._load()
        ledger[self._key(chain_id, runner)] = {"epoch": entry.epoch, "cumulative": entry.cumulative}
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(ledger, indent=1))
        tmp.replace(self.path)


@dataclass(frozen=True)
class CallTerms:
    """What the user accepts for a call."""

    model_digest: bytes  # the model paid for (confirmed, or provisional)
    max_price: int | None = None  # per input
    deposit: int | None = None  # when a channel must be opened or topped up
    channel_periods: int = 100  # a new channel expires this many periods on


@dataclass(frozen=True)
class PaidCall:
    price: int  # per input
    cost: int  # of this call
    inference: Inference
    scores: np.ndarray


def batch_rows(shape: tuple[int, ...], input_rank: int) -> int:
    """Inputs in an array: one if it has the problem's input rank, else its first dimension
    (the runner's ``check_inputs`` counts the same way, and charges per row)."""
    return 1 if len(shape) == input_rank else int(shape[0]) if shape else 0


class ChannelClient:
    """Pays one runner per call through a channel; ``on_open(amount)`` hears of a deposit sent."""

    def __init__(self, keys: KeyPair, ledger: VoucherLedger, node: MarketNode,
                 on_open: Callable[[int], None] | None = None) -> None:
        self.keys = keys
        self.ledger = ledger
        self.node = node
        self.on_open = on_open

    def paid_floor(self, chain_id: bytes, runner: bytes) -> tuple[ChannelView | None, int]:
        """The channel and what was paid in its epoch: the chain's redeemed amount or our ledger's."""
        channel = self.node.channel(chain_id, self.keys.address_bytes, runner)
        if channel is None or not channel.is_open:
            return channel, 0
        mine = self.ledger.get(chain_id, runner)
        local = mine.cumulative if mine is not None and mine.epoch == channel.epoch else 0
        return channel, max(channel.redeemed, local)

    def call(self, chain_id: bytes, runner: bytes, inputs: np.ndarray, input_rank: int, terms: CallTerms) -> PaidCall:
        """Pay for and run one call of ``inputs``; raises ``ChannelClientError`` or the runner's ``InferError``."""
        quote = self.node.quote(chain_id, runner, self.keys.address_bytes)
        check_model(quote.model_digest, terms.model_digest, runner)
        if terms.max_price is not None and quote.price > terms.max_price:
            raise PriceAboveCap(quote.price, terms.max_price)
        cost = call_cost(quote.price, batch_rows(inputs.shape, input_rank))
        channel, floor = self._funded_channel(chain_id, runner, cost, terms)
        if quote.paid > floor:
            raise PaidMismatch(quote.paid, floor, str(self.ledger.path))
        voucher = make_voucher(self.keys, chain_id, runner, channel.epoch, floor + cost)
        self.ledger.record(chain_id, runner, LedgerEntry(channel.epoch, floor + cost))
        try:
            inference = self.node.infer(chain_id, runner, voucher, npy_bytes(inputs))
        except InferError as exc:
            if not exc.voucher_kept:  # the runner holds nothing of it: the amount is ours again
                self.ledger.record(chain_id, runner, LedgerEntry(channel.epoch, floor))
            raise
        check_model(inference.model_digest, terms.model_digest, runner)
        return PaidCall(quote.price, cost, inference, parse_npy(inference.scores_npy))

    def _funded_channel(self, chain_id: bytes, runner: bytes, cost: int, terms: CallTerms) -> tuple[ChannelView, int]:
        """An open channel with ``cost`` left and time to run, opening or topping it up if needed."""
        channel, floor = self.paid_floor(chain_id, runner)
        period = self.node.period(chain_id)
        if (channel is None or not channel.is_open or channel.deposit - floor < cost
                or channel.expires_period <= period + RENEW_MARGIN_PERIODS):
            amount = max(terms.deposit if terms.deposit is not None else DEFAULT_DEPOSIT_CALLS * cost, cost)
            if self.on_open is not None:
                self.on_open(amount)
            self.node.open_channel(chain_id, runner, amount, period + terms.channel_periods)
            channel, floor = self.paid_floor(chain_id, runner)
        if channel is None or not channel.is_open:
            raise ChannelNotOpen("the channel did not open")
        return channel, floor


def check_model(served: bytes, wanted: bytes, runner: bytes) -> None:
    """Refuse a runner whose model is not the one paid for."""
    if served != wanted:
        raise StaleModel(f"runner 0x{runner.hex()} serves model {served.hex()[:16]}, the chain's model is "
                         f"{wanted.hex()[:16]}: stale, not paying")
