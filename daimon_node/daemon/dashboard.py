"""The web page's data (``daimon_dashboard``): the problem, its history, who earned what.

Receipts are not stored, so the canonical blocks are re-executed once and cached per chain
(``Dashboard.replayed``), and the page is rendered from blocks and receipts by small steps.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import trio

from chain.state import PREFIX_REPUTATION, Reputation as RepRecord, State, get_meta, iter_records
from chain.transition import process_block
from chain.types import Block, ImprovementBody, ProblemBody

from daimon_node.daemon.chains import ChainHandle
from daimon_node.rpc.api import hex0x

if TYPE_CHECKING:
    from daimon_node.daemon.backend import NodeBackend

TOP_BLOCKS, TOP_EARNERS, TOP_REPUTATION = 50, 10, 20


def block_json(block: Block) -> dict[str, Any]:
    """A block as JSON: header fields, and a readable body (hex for the raw objects)."""
    h = block.header
    out: dict[str, Any] = {
        "hash": hex0x(block.hash),
        "chain": hex0x(h.chain_id),
        "height": h.height,
        "parent": hex0x(h.parent),
        "kind": "problem" if h.kind == 0 else "improvement",
        "period": h.period,
        "timestamp": h.timestamp,
        "committer": hex0x(h.committer),
        "body_hash": hex0x(h.body_hash),
        "state_root": hex0x(h.state_root),
        "signature": hex0x(h.signature),
    }
    body = block.body
    if isinstance(body, ProblemBody):
        out["problem"] = {"name": body.proposal.params.name, "tuples": 1 + len(body.extra_tuples)}
    elif isinstance(body, ImprovementBody):
        out["transactions"] = [hex0x(tx.hash) for tx in body.transactions]
        out["settlement"] = hex0x(body.settlement.poi_hash) if body.settlement else None
        out["season_reveal"] = body.season_reveal.season if body.season_reveal else None
        if body.anchor is not None:
            poi = body.anchor.poi
            out["anchor"] = {
                "poi": hex0x(poi.hash), "prover": hex0x(poi.prover), "model_digest": hex0x(poi.model_digest),
                "votes": [hex0x(v.validator) for v in body.anchor.votes],
            }
        else:
            out["anchor"] = None
    return out




@dataclass
class Replay:
    blocks: list[tuple[Block, Any]] = field(default_factory=list)  # canonical blocks with receipts
    state: State = field(default_factory=State)


def problem_json(handle: ChainHandle) -> dict[str, Any]:
    params = handle.proposal.params
    return {"name": params.name, "token_symbol": params.token_symbol, "decimals": params.decimals,
            "t_p": params.t_p, "t_b": params.t_b, "num_classes": params.num_classes,
            "input_shape": list(params.input_spec.shape), "input_dtype": params.input_spec.dtype,
            "reward_scale": str(params.reward_scale), "committers": len(params.committers), "t0": params.t0}


def settlement_json(s: Any) -> dict[str, Any]:
    return {"poi": hex0x(s.poi_hash), "outcome": s.outcome, "improver": hex0x(s.improver),
            "distances_ppb": list(s.distances), "reward": str(s.improver_reward),
            "validator_rewards": [[hex0x(a), str(r)] for a, r in s.validator_rewards],
            "slashed": str(s.slashed), "reason": s.reason}


@dataclass
class Earnings:
    """The distance history and the improvers' and validators' rewards, summed over settlements."""

    history: list[dict[str, Any]]
    improvers: dict[str, dict[str, Any]] = field(default_factory=dict)
    validators: dict[str, dict[str, Any]] = field(default_factory=dict)

    def add(self, block: Block, s: Any) -> None:
        h = block.header
        self.history.append({"height": h.height, "period": h.period, "timestamp": h.timestamp,
                             "distance_ppb": sum(s.distances) // max(1, len(s.distances))})
        imp = self.improvers.setdefault(hex0x(s.improver), {"address": hex0x(s.improver), "rewards": 0,
                                                             "improvements": 0})
        imp["rewards"] += s.improver_reward
        imp["improvements"] += 1
        for addr, amount in s.validator_rewards:
            v = self.validators.setdefault(hex0x(addr), {"address": hex0x(addr), "rewards": 0, "votes": 0})
            v["rewards"] += amount
            v["votes"] += 1


def top_earners(earners: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    ranked = sorted(earners.values(), key=lambda v: -v["rewards"])
    return [dict(v, rewards=str(v["rewards"])) for v in ranked][:TOP_EARNERS]


def render_blocks(replayed: list[tuple[Block, Any]], earnings: Earnings) -> list[dict[str, Any]]:
    rendered = []
    for block, receipt in replayed:
        item = block_json(block)
        item["fees"] = str(receipt.fees)
        s = receipt.settlement
        if s is not None:
            item["settlement"] = settlement_json(s)
            if s.outcome == "settled":
                earnings.add(block, s)
        rendered.append(item)
    return rendered


class Dashboard:
    """Renders the page's data, with each chain's replay cached between calls."""

    def __init__(self) -> None:
        self._replays: dict[bytes, Replay] = {}

    def replayed(self, handle: ChainHandle) -> list[tuple[Block, Any]]:
        """Canonical blocks with their receipts, re-executed once and cached per chain."""
        store = handle.store
        replay = self._replays.get(handle.chain_id)
        if replay is not None and replay.blocks and \
                store.canonical_hash(len(replay.blocks) - 1) != replay.blocks[-1][0].hash:
            replay = None  # a reorg: replay from scratch
        if replay is None:
            replay = self._replays[handle.chain_id] = Replay()
        for height in range(len(replay.blocks), store.height + 1):
            block = store.get_block_by_height(height)
            if block is None:
                break
            outcome = process_block(replay.state, block, handle.env)
            replay.state = outcome.state
            replay.blocks.append((block, outcome.receipt))
        return list(replay.blocks)

    async def render(self, backend: "NodeBackend", handle: ChainHandle) -> dict[str, Any]:
        chain, params = handle.chain_id, handle.proposal.params
        out: dict[str, Any] = {
            "chain": hex0x(chain), "name": params.name, "height": handle.store.height,
            "problem": problem_json(handle), "period": await backend.period(chain), "best": None, "blocks": [],
            "history": [], "improvers": [], "validators": [], "offers": [], "reputation": [],
            "minted": "0", "burned": "0",
        }
        if not handle.started:
            return out
        meta = get_meta(handle.state)
        out.update(best=await backend.best_model(chain), d_c_ppb=list(meta.d_c), minted=str(meta.minted),
                   burned=str(meta.burned))
        earnings = Earnings([{"height": 0, "period": 0, "timestamp": params.t0 + params.t_p, "distance_ppb": 10**9}])
        replayed = await trio.to_thread.run_sync(lambda: self.replayed(handle))
        out["blocks"] = render_blocks(replayed, earnings)[::-1][:TOP_BLOCKS]
        out["history"] = earnings.history
        out["improvers"] = top_earners(earnings.improvers)
        out["validators"] = top_earners(earnings.validators)
        out["offers"] = await offers_json(backend, chain, out["best"])
        out["reputation"] = sorted(
            ({"address": hex0x(a), "score": r.score, "up": r.up, "down": r.down}
             for a, r in iter_records(handle.state, PREFIX_REPUTATION, RepRecord)),
            key=lambda r: -r["score"])[:TOP_REPUTATION]
        return out


async def offers_json(backend: "NodeBackend", chain: bytes, best: Any) -> list[dict[str, Any]]:
    offers = []
    for o in await backend.get_offers(chain):
        rep = await backend.get_reputation(chain, bytes.fromhex(o["provider"][2:]))
        offers.append(dict(o, reputation=rep["score"], ratings=rep["ratings"],
                           current=o["model_digest"] == (best or {}).get("model_digest")))
    return offers
