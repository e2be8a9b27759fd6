"""Chain objects as the RPC and the web page show them: one shape per object, made here only.

Bytes are ``0x`` hex, token amounts decimal strings, counts and heights JSON numbers
(docs/rpc.md, "Conventions"). A block is flat: its header's fields, then a readable
summary of its body. A receipt (what executing the block did, kept by the store) adds
``fees`` and the settlement it decided. Events carry the same field names as the
blocks they come from. Everything here reads values it is given; nothing executes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

from chain.constants import PPB
from chain.records import ChainMeta, Reputation as ReputationRecord
from chain.outcome import BlockReceipt, Settlement
from chain.header import BlockHeader
from chain.payloads import Transaction
from chain.proofs import PoI, Vote
from chain.types import Block, ImprovementBody, ProblemBody, ProblemParams

from daimon_node.rpc.api import hex0x

TOP_ROWS = 10  # improvers and validators the page lists
TOP_REPUTATION = 20
RECENT_BLOCKS = 50  # blocks the page lists, newest first


# --- blocks -----------------------------------------------------------------------------
def header_json(header: BlockHeader) -> dict[str, Any]:
    """A header's fields, as every block and ``newHeads`` event starts."""
    return {
        "hash": hex0x(header.hash), "chain": hex0x(header.chain_id), "height": header.height,
        "parent": hex0x(header.parent), "kind": "problem" if header.kind == 0 else "improvement",
        "period": header.period, "timestamp": header.timestamp, "committer": hex0x(header.committer),
        "body_hash": hex0x(header.body_hash), "state_root": hex0x(header.state_root),
        "signature": hex0x(header.signature),
    }


def block_json(block: Block) -> dict[str, Any]:
    """``daimon_getBlockBy*``: the header's fields and a readable body (hashes for what it carries)."""
    out = header_json(block.header)
    body = block.body
    if isinstance(body, ProblemBody):
        out["problem"] = {"name": body.proposal.params.name, "tuples": 1 + len(body.extra_tuples)}
    elif isinstance(body, ImprovementBody):
        out["transactions"] = [hex0x(tx.hash) for tx in body.transactions]
        out["settlement"] = hex0x(body.settlement.poi_hash) if body.settlement else None
        out["season_reveal"] = body.season_reveal.season if body.season_reveal else None
        out["anchor"] = None if body.anchor is None else {
            **_poi_fields(body.anchor.poi), "votes": [hex0x(v.validator) for v in body.anchor.votes]}
    return out


def _poi_fields(poi: PoI) -> dict[str, Any]:
    return {"poi": hex0x(poi.hash), "prover": hex0x(poi.prover), "model_digest": hex0x(poi.model_digest)}


def settlement_json(s: Settlement) -> dict[str, Any]:
    return {"poi": hex0x(s.poi_hash), "outcome": s.outcome, "improver": hex0x(s.improver),
            "distances_ppb": list(s.distances), "reward": str(s.improver_reward),
            "validator_rewards": [[hex0x(a), str(r)] for a, r in s.validator_rewards],
            "slashed": str(s.slashed), "reason": s.reason}


def block_with_receipt(block: Block, receipt: BlockReceipt) -> dict[str, Any]:
    """A block as the dashboard lists it: ``settlement`` is what the block decided (or null)."""
    out = block_json(block)
    out["fees"] = str(receipt.fees)
    if receipt.settlement is not None:
        out["settlement"] = settlement_json(receipt.settlement)
    return out


# --- events (WebSocket subscriptions) ------------------------------------------------------
def head_event(header: BlockHeader, weight: int) -> dict[str, Any]:
    """``newHeads``: the new head's header fields and the chain's cumulative weight."""
    return {**header_json(header), "weight": weight}


def proof_event(poi: PoI) -> dict[str, Any]:
    """``proofs``: an admitted PoI, named as in a block's anchor."""
    return {**_poi_fields(poi), "period": poi.period}


def vote_event(vote: Vote) -> dict[str, Any]:
    return {"poi": hex0x(vote.poi_hash), "validator": hex0x(vote.validator)}


def tx_event(tx: Transaction) -> dict[str, Any]:
    return {"hash": hex0x(tx.hash), "sender": hex0x(tx.sender), "nonce": tx.nonce}


# --- problems ----------------------------------------------------------------------------
def problem_on_chain(meta: ChainMeta) -> dict[str, Any]:
    """What ``daimon_getProblem`` adds to the proposal once the Problem block exists."""
    out: dict[str, Any] = {"d_c_ppb": list(meta.d_c), "minted": str(meta.minted), "burned": str(meta.burned)}
    season = meta.season
    if season is not None:
        out["season"] = {
            "index": season.index, "start_period": season.start_period, "sealed": season.holdout is not None,
            "sealed_ahead": season.sealed_ahead,
            "improvements": season.improvement_count, "locked_rewards": str(sum(e.amount for e in season.locked)),
            "confirmed_error_ppb": season.confirmed_error_ppb,
            "holdout": None if season.holdout is None else {
                "z_h_id": hex0x(season.holdout.z_h_id), "m_h": season.holdout.m_h,
                "commitment": hex0x(season.holdout.commitment)},
            "confirmed_model": None if meta.confirmed is None else hex0x(meta.confirmed.digest),
        }
    return out


def problem_facts(params: ProblemParams) -> dict[str, Any]:
    """The parameters the page shows beside a chain."""
    return {"name": params.name, "token_symbol": params.token_symbol, "decimals": params.decimals,
            "t_p": params.t_p, "t_b": params.t_b, "num_classes": params.num_classes,
            "input_shape": list(params.input_spec.shape), "input_dtype": params.input_spec.dtype,
            "reward_scale": str(params.reward_scale), "committers": len(params.committers), "t0": params.t0}


# --- the dashboard ---------------------------------------------------------------------------
@dataclass
class DashboardTally:
    """Best-distance history and reward totals, summed from receipts in height order."""

    history: list[dict[str, Any]]
    improvers: dict[str, dict[str, Any]] = field(default_factory=dict)
    validators: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def start(cls, params: ProblemParams) -> "DashboardTally":
        """The chain starts at distance 1.0 (``PPB``) when its Problem block seals, at the end of T_p."""
        return cls([{"height": 0, "period": 0, "timestamp": params.t0 + params.t_p, "distance_ppb": PPB}])

    def add(self, header: BlockHeader, receipt: BlockReceipt) -> None:
        s = receipt.settlement
        if s is None or s.outcome != "settled":
            return
        self.history.append({"height": header.height, "period": header.period, "timestamp": header.timestamp,
                             "distance_ppb": sum(s.distances) // max(1, len(s.distances))})
        improver = self.improvers.setdefault(hex0x(s.improver), {"address": hex0x(s.improver), "rewards": 0,
                                                                 "improvements": 0})
        improver["rewards"] += s.improver_reward
        improver["improvements"] += 1
        for address, amount in s.validator_rewards:
            validator = self.validators.setdefault(hex0x(address), {"address": hex0x(address), "rewards": 0,
                                                                    "votes": 0})
            validator["rewards"] += amount
            validator["votes"] += 1

    def json(self) -> dict[str, Any]:
        return {"history": self.history, "improvers": _top(self.improvers), "validators": _top(self.validators)}


def _top(rows: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    ranked = sorted(rows.values(), key=lambda row: -row["rewards"])[:TOP_ROWS]
    return [dict(row, rewards=str(row["rewards"])) for row in ranked]


def dashboard_frame(chain: bytes, params: ProblemParams, height: int, period: Any) -> dict[str, Any]:
    """The dashboard of a chain before anything of it is read: every key the page expects."""
    return {"chain": hex0x(chain), "name": params.name, "height": height, "problem": problem_facts(params),
            "period": period, "best": None, "blocks": [], "history": [], "improvers": [], "validators": [],
            "offers": [], "reputation": [], "minted": "0", "burned": "0"}


def reputation_rows(records: Iterable[tuple[bytes, ReputationRecord]]) -> list[dict[str, Any]]:
    rows = [{"address": hex0x(a), "score": r.score, "up": r.up, "down": r.down} for a, r in records]
    return sorted(rows, key=lambda row: -row["score"])[:TOP_REPUTATION]
