"""Vouchers of the payment channels (docs/market.md): signing one, and the runner's record of them.

A voucher promises a runner ``cumulative`` base units in total from one channel; each paid
call adds ``call_cost(price, items)`` to the previous one. The runner accepts a voucher
only if it pays at least that much more than what it already holds from the payer in the
channel's epoch (``VoucherBook.accept``), and forgets it again if the call failed on its
side (``roll_back``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from chain.crypto import KeyPair, address_bytes
from chain.signing import EMPTY_SIGNATURE, is_valid_signature, sign
from chain.records import Channel
from chain.payloads import Voucher

from daimon_node.market.errors import (
    ChannelExpiring,
    Forged,
    NoChannel,
    Overspent,
    Replayed,
    StaleEpoch,
    Underpaid,
)

EXPIRY_MARGIN_PERIODS: Final[int] = 1  # refuse vouchers of channels closable within this many periods
COMPACT_FACTOR: Final[int] = 4  # the voucher log is rewritten past this many lines per payer...
COMPACT_SLACK: Final[int] = 1024  # ...plus this many


def make_voucher(keys: KeyPair, chain_id: bytes, runner: bytes, epoch: int, cumulative: int) -> Voucher:
    return sign(Voucher(chain_id, runner, epoch, cumulative, keys.public_key, EMPTY_SIGNATURE), keys, chain_id)


@dataclass
class VoucherBook:
    """The runner's record of the highest voucher it accepted from each payer, per chain.

    Persisted so a restart cannot be used to replay old vouchers against it, as an
    append-only log: one hex-encoded voucher per line, the last line of a (chain, payer)
    wins. Accepting a voucher appends one line (a paid call must not rewrite the whole
    book: with a JSON rewrite and rename per call, the save was the largest cost of a
    call); a roll-back, and a log grown past ``COMPACT_FACTOR`` lines per payer,
    rewrite the file (to a temporary name, then renamed over it). A book saved as one
    JSON list by earlier versions is read too, and rewritten as a log.
    """

    path: Path | None = None
    accepted: dict[tuple[bytes, bytes], Voucher] = field(default_factory=dict)  # (chain, payer addr) -> voucher
    redeem_sent: dict[tuple[bytes, bytes], tuple[int, int]] = field(default_factory=dict)  # -> (cumulative, period)
    _lines: int = 0  # lines in the log file

    @classmethod
    def load(cls, path: Path | None) -> "VoucherBook":
        book = cls(path)
        if path is None or not path.exists():
            return book
        text = path.read_text()
        legacy = text.lstrip().startswith("[")
        for raw in json.loads(text) if legacy else text.split():
            v = Voucher.decode(bytes.fromhex(raw))
            book.accepted[(v.chain_id, address_bytes(v.payer))] = v
            book._lines += 1
        if legacy:
            book.save()
        return book

    def save(self) -> None:
        """Rewrite the log with one line per payer."""
        if self.path is None:
            return
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text("".join(v.encode().hex() + "\n" for v in self.accepted.values()))
        tmp.replace(self.path)
        self._lines = len(self.accepted)

    def _append(self, voucher: Voucher) -> None:
        if self.path is None:
            return
        if self._lines >= COMPACT_FACTOR * max(1, len(self.accepted)) + COMPACT_SLACK:
            self.save()
            return
        with self.path.open("a") as log:
            log.write(voucher.encode().hex() + "\n")
        self._lines += 1

    def floor(self, chain_id: bytes, payer: bytes, channel: Channel | None) -> int:
        """What this payer has already paid in its channel's current epoch."""
        if channel is None:
            return 0
        prev = self.accepted.get((chain_id, payer))
        accepted = prev.cumulative if prev is not None and prev.epoch == channel.epoch else 0
        return max(accepted, channel.redeemed)

    def accept(self, voucher: Voucher, *, chain_id: bytes, runner: bytes, cost: int,
               channel: Channel | None, period: int) -> Voucher | None:
        """Check ``voucher`` pays ``cost`` more than before; record it; return the one it replaces.

        Raises ``Forged``, ``NoChannel``, ``StaleEpoch``, ``ChannelExpiring``, ``Overspent``,
        ``Replayed`` or ``Underpaid``.
        """
        if voucher.chain_id != chain_id or voucher.runner != runner:
            raise Forged("voucher is for another chain or runner")
        if not is_valid_signature(voucher, chain_id):
            raise Forged("bad voucher signature")
        payer = address_bytes(voucher.payer)
        if channel is None or not channel.is_open:
            raise NoChannel("no open channel from this payer; send OpenChannel first")
        if voucher.epoch != channel.epoch:
            raise StaleEpoch(f"voucher epoch {voucher.epoch}, channel epoch {channel.epoch}")
        if period + EXPIRY_MARGIN_PERIODS >= channel.expires_period:
            raise ChannelExpiring(f"channel closable from period {channel.expires_period}")
        if voucher.cumulative > channel.deposit:
            raise Overspent(f"voucher {voucher.cumulative} exceeds the deposit {channel.deposit}")
        floor = self.floor(chain_id, payer, channel)
        if voucher.cumulative <= floor:
            raise Replayed(f"voucher {voucher.cumulative} not above what was paid ({floor})")
        if voucher.cumulative - floor < cost:
            raise Underpaid(f"voucher adds {voucher.cumulative - floor}, the call costs {cost}")
        key = (chain_id, payer)
        previous = self.accepted.get(key)
        self.accepted[key] = voucher
        self._append(voucher)
        return previous

    def roll_back(self, voucher: Voucher, previous: Voucher | None) -> None:
        """Forget ``voucher`` (the call it paid for failed on our side)."""
        key = (voucher.chain_id, address_bytes(voucher.payer))
        if self.accepted.get(key) == voucher:
            if previous is None:
                self.accepted.pop(key)
            else:
                self.accepted[key] = previous
            self.save()
