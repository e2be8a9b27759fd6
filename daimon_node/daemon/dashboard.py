"""The web page's view of a chain (``daimon_dashboard``), built from the canonical blocks
replayed once with their receipts."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import trio

from chain.records import Reputation as RepRecord
from chain.state import PREFIX_REPUTATION, State, get_meta, iter_records
from chain.transition import process_block
from chain.types import Block, ImprovementBody, ProblemBody

from daimon_node.daemon.chains import ChainHandle
from daimon_node.rpc.api import hex0x

if TYPE_CHECKING:
    from daimon_node.daemon.backend import NodeBackend


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


def replayed(backend: "NodeBackend", handle: ChainHandle) -> list[tuple[Block, Any]]:
    """Canonical blocks with their receipts, re-executed once and cached per chain (on the backend)."""
    cache = getattr(backend, "_replay_cache", None)
    if cache is None:
        cache = backend._replay_cache = {}  # type: ignore[attr-defined]
    entry = cache.get(handle.chain_id)
    store = handle.store
    if entry is not None:
        blocks = entry["blocks"]
        if blocks and store.canonical_hash(len(blocks) - 1) != blocks[-1][0].hash:
            entry = None  # a reorg: replay from scratch
    if entry is None:
        entry = cache[handle.chain_id] = {"blocks": [], "state": State()}
    blocks = entry["blocks"]
    for height in range(len(blocks), store.height + 1):
        block = store.get_block_by_height(height)
        if block is None:
            break
        outcome = process_block(entry["state"], block, handle.env)
        entry["state"] = outcome.state
        blocks.append((block, outcome.receipt))
    return list(blocks)

def tally_settlement(block: Block, s: Any, history: list[dict[str, Any]], improvers: dict[str, dict[str, Any]],
                     validators: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """A settlement as the page shows it; a paid one adds a point to the distance history and
    its rewards to the improver's and validators' totals."""
    if s.outcome == "settled":
        history.append({"height": block.header.height, "period": block.header.period,
                        "timestamp": block.header.timestamp,
                        "distance_ppb": sum(s.distances) // max(1, len(s.distances))})
        imp = improvers.setdefault(hex0x(s.improver), {"address": hex0x(s.improver), "rewards": 0, "improvements": 0})
        imp["rewards"] += s.improver_reward
        imp["improvements"] += 1
        for addr, amount in s.validator_rewards:
            v = validators.setdefault(hex0x(addr), {"address": hex0x(addr), "rewards": 0, "votes": 0})
            v["rewards"] += amount
            v["votes"] += 1
    return {"poi": hex0x(s.poi_hash), "outcome": s.outcome, "improver": hex0x(s.improver),
            "distances_ppb": list(s.distances), "reward": str(s.improver_reward),
            "validator_rewards": [[hex0x(a), str(r)] for a, r in s.validator_rewards],
            "slashed": str(s.slashed), "reason": s.reason}


async def dashboard_json(backend: "NodeBackend", handle: ChainHandle) -> dict[str, Any]:
    """What the web page shows of one chain: the problem, the period, the best model, the last
    blocks with their settlements, the leading improvers and validators, offers and reputation."""
    chain = handle.chain_id
    params = handle.proposal.params
    out: dict[str, Any] = {
        "chain": hex0x(chain), "name": params.name, "height": handle.store.height,
        "problem": {"name": params.name, "token_symbol": params.token_symbol, "decimals": params.decimals,
                    "t_p": params.t_p, "t_b": params.t_b, "num_classes": params.num_classes,
                    "input_shape": list(params.input_spec.shape), "input_dtype": params.input_spec.dtype,
                    "reward_scale": str(params.reward_scale), "committers": len(params.committers),
                    "t0": params.t0},
        "period": await backend.period(chain), "best": None, "blocks": [], "history": [], "improvers": [],
        "validators": [], "offers": [], "reputation": [], "minted": "0", "burned": "0",
    }
    if not handle.started:
        return out
    meta = get_meta(handle.state)
    out.update(best=await backend.best_model(chain), d_c_ppb=list(meta.d_c), minted=str(meta.minted),
               burned=str(meta.burned))
    history = [{"height": 0, "period": 0, "timestamp": params.t0 + params.t_p, "distance_ppb": 10**9}]
    improvers: dict[str, dict[str, Any]] = {}
    validators: dict[str, dict[str, Any]] = {}
    rendered = []
    for block, receipt in await trio.to_thread.run_sync(lambda: replayed(backend, handle)):
        item = block_json(block)
        item["fees"] = str(receipt.fees)
        if receipt.settlement is not None:
            item["settlement"] = tally_settlement(block, receipt.settlement, history, improvers, validators)
        rendered.append(item)
    out["blocks"] = rendered[::-1][:50]
    out["history"] = history
    out["improvers"] = [dict(v, rewards=str(v["rewards"])) for v in
                        sorted(improvers.values(), key=lambda v: -v["rewards"])][:10]
    out["validators"] = [dict(v, rewards=str(v["rewards"])) for v in
                         sorted(validators.values(), key=lambda v: -v["rewards"])][:10]
    offers = []
    for o in await backend.get_offers(chain):
        rep = await backend.get_reputation(chain, bytes.fromhex(o["provider"][2:]))
        offers.append(dict(o, reputation=rep["score"], ratings=rep["ratings"],
                           current=o["model_digest"] == (out["best"] or {}).get("model_digest")))
    out["offers"] = offers
    out["reputation"] = sorted(
        ({"address": hex0x(a), "score": r.score, "up": r.up, "down": r.down}
         for a, r in iter_records(handle.state, PREFIX_REPUTATION, RepRecord)),
        key=lambda r: -r["score"])[:20]
    return out
