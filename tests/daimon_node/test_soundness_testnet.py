"""Issue 9 end to end: 4 node processes, a sealed holdout, an honest improver and a cheater.

Node 1 improves honestly (the linear digits model). Node 2 runs the cheater
role: once node 1's model is the public best, it attacks the DEL from that
model's labels (``del_embed.attack``), tables the result as a lookup ONNX
model (answering the public model's labels on Z_h), and wins a provisional
reward larger than the honest one. Node 0, the contributor, reveals the
holdout in the window from its secret file: the honest improvement vests every
unit, the cheater's reward (and its voters') burns, the best model and d_c
roll back to node 1's, and node 0 seals season 1 with the next holdout set.

Season 0 is 7 periods long (not 2): the cheater can only start after the
honest model settles (3 periods: register, anchor, settle), then needs a
register and an anchor of its own inside the same season (2 periods of slack
for a reorg of the Problem block or a lost transaction).
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from chain.crypto import address_bytes
from chain.state import get_account, get_meta
from daimon_node.proofs.problem_kit import load_problem
from daimon_node.daemon.replay import replay_chain
from daimon_node.harness import cheater
from daimon_node.harness.testnet import Testnet, prepare_testnet
from netutil import free_base_port, try_call, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]

T_P, T_B, GRACE = 10, 6, 3
GENESIS = 1000 * 10**18


def configure(directory: Path, models: dict[str, Path]) -> None:
    """Node 1: honest (linear); node 2: the cheater; nobody else improves."""
    for i in range(4):
        path = directory / f"node{i}.toml"
        cfg = tomllib.loads(path.read_text())
        roles = cfg["roles"]
        roles["improver"].update(enabled=i == 1, models=[str(models["linear"])] if i == 1 else [])
        if i == 2:
            cheater.enable(cfg, rounds=1, max_seconds=20.0, wait_for_best=True)
        path.write_text(tomli_w.dumps(cfg))


def test_cheater_is_burned_and_the_honest_improver_vests(tmp_path: Path) -> None:
    base = free_base_port(4)
    plan = prepare_testnet(tmp_path / "net", 4, t_p=T_P, t_b=T_B, grace=GRACE, base_port=base, start_delay=8,
                           holdout_fraction=0.2, seasons=2, season_periods=7, reveal_window=2)
    configure(plan.directory, plan.models)
    chain = "0x" + plan.chain_id.hex()
    port = plan.rpc_ports[3]
    net = Testnet(plan)
    net.start()
    try:
        def season() -> dict[str, Any] | None:
            summary = try_call(port, lambda c: c.get_problem(chain))
            return None if summary is None else summary.get("season")

        def next_season_sealed() -> bool:
            s = season()
            return s is not None and s["index"] >= 1 and s["sealed"]

        wait_for("season 0 revealed and season 1 sealed", next_season_sealed, 200)
        heights = [try_call(p, lambda c: c.block_number(chain)) for p in plan.rpc_ports]
    finally:
        net.stop()
    assert all(h is not None for h in heights)

    replay = replay_chain(plan.directory / "node3", plan.chain_id)
    params = load_problem(plan.problem_dir).params
    settled = [r.settlement for r in replay.receipts if r.settlement is not None and r.settlement.outcome == "settled"]
    honest, cheater = plan.keys[1].address_bytes, plan.keys[2].address_bytes
    assert [s.improver for s in settled[:2]] == [honest, cheater], [(s.improver.hex()[:8], s.distances) for s in settled]
    h, c = settled[0], settled[1]
    assert c.distances[0] < h.distances[0] and c.improver_reward > 0  # the DEL was fooled: paid provisionally
    notes = [r.season for r in replay.receipts if r.season]
    assert any("season 0 revealed: 1/2 improvements vested" in n for n in notes), notes
    state = replay.state
    meta = get_meta(state)
    assert meta.confirmed is not None and meta.confirmed.owner == honest
    assert meta.d_c == h.distances and meta.provisional == meta.confirmed
    cheat_total = c.improver_reward + sum(a for _, a in c.validator_rewards)
    assert meta.burned >= cheat_total + params.improver_bond
    # Final balances: the honest improver kept every unit; the cheater kept nothing of its reward and
    # lost the improver bond held until the judge.
    vested_validator = dict(h.validator_rewards)

    def fee_flow(addr: bytes) -> int:
        """Fees ``addr`` earned committing blocks minus the fees its own transactions paid."""
        got = sum(r.fees for b, r in zip(replay.blocks[1:], replay.receipts[1:]) if address_bytes(b.header.committer) == addr)
        spent = sum(tx.fee for b in replay.blocks[1:] for tx in b.body.transactions if address_bytes(tx.sender) == addr)
        return got - spent

    for i, addr in enumerate([honest, cheater]):
        acct = get_account(state, addr)
        assert acct.locked == params.validator_bond  # no locked reward is left in anyone's account
        expected = GENESIS + vested_validator.get(addr, 0) + (h.improver_reward if addr == honest else 0)
        expected -= params.improver_bond if addr == cheater else 0
        expected += fee_flow(addr)
        assert acct.balance + acct.locked == expected, (i, acct)
