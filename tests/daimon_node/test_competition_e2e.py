"""The competition end to end (issue 16): an image-folder problem, a PyTorch improver, two seasons,
a validator that leaves, a market user's channel, and every balance checked to the base unit.

Four node processes on 127.0.0.1 run a problem made from a folder of PNG files (one subfolder per
class, written here from scikit-learn's digits) with two sealed holdout seasons. The improver is
not a node: it follows ``docs/improvers.md`` to the letter, running that page's code blocks as they
are written (the ``train_cnn.py`` script and the ``sh`` blocks, with ``daimon-node`` and ``python``
this checkout's): a CNN trained 20 steps wins season 0, one trained 100 steps beats it in season 1,
and both vest (offline, on this split, the 20-step CNN has about 50% holdout error and the 100-step
one about 15%: 71 holdout positions gained for 1 lost, far beyond the problem's margin). Meanwhile
node 3 unbonds its validator bond and withdraws it (``validator unbond|withdraw`` with the node's
own key), and a market user opens a payment channel to a runner that never redeems and closes it
after its expiry. At the end the chain is replayed and every account's holdings are derived from
the problem's parameters and the receipts: rewards from the reward formula, fees from the blocks,
bonds and deposits from the rules.

The problem is created with one sealed holdout (season 0). Season 1's is sealed while the network
runs: the contributor runs ``problem add-season`` with new data (digits the problem never saw, as a
second PNG folder), and its node's contributor role reveals season 0 and rolls into season 1 on its own.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from chain import constants as C
from chain.crypto import address_bytes
from chain.rewards import improvement_reward, validator_reward
from chain.state import get_account, get_meta
from daimon_node.daemon.replay import Replay, replay_chain
from daimon_node.harness.testnet import Testnet, TestnetPlan, prepare_testnet
from daimon_node.keystore import init_data_dir
from daimon_node.proofs.poi import model_digest
from daimon_node.proofs.problem_kit import load_problem
from netutil import free_base_port, try_call, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "improvers.md"
# Season 0 is periods 1..4: a registration in block k lets the proof be anchored in k + 1 and
# revealed in k + 2, whose block settles it before it judges the season (settlement comes first in
# a block), so the first model must be registered by block 3. Its training (the page's train block:
# starting torch, 20 steps, the export and an offline proof) took 45 s on 2 cores at load 15-20
# while four nodes started; START_DELAY + T_p + 3 periods = 58 s covers it, and at a normal load
# (under 10 s) registration lands in block 1, leaving two periods to submit again. T_b covers one
# 'model submit' (starting the CLI and a sandbox, fetching the season's content, PROVE on the head,
# all in one period): 7 s at load 15, so 10 s. The reveal window of 2 lets the contributor's reveal
# miss one block.
T_P, T_B, GRACE = 20, 10, 4
START_DELAY = 8
SEASON_PERIODS, REVEAL_WINDOW = 4, 2
UNBONDING = 2  # the least the chain allows
CHANNEL_PERIODS = 3  # closable 3 periods after the open: inside the run, after --wait returns
DEPOSIT = 5_000
GENESIS = 1000 * 10**18
STEPS = (20, 100)  # season 0's model, season 1's (see the module docstring)
# Just over half the stake: 3 of 4 equal validators, and 2 of 3 once node 3 has unbonded, so one
# slow validator never holds up an anchor.
QUORUM_PPB = C.PPB // 2 + 1


# Every NEW_DATA_EVERY-th digit is kept out of the problem: it is the new data season 1 is sealed from
# (about 450 items, all of them holdout; the chain refuses inputs it has sealed before).
NEW_DATA_EVERY = 4


def write_digit_pngs(folder: Path, new_data: bool = False) -> None:
    """The README's image folder: digits as 8x8 grayscale PNGs, one subfolder per class; the problem's
    share of them, or (``new_data``) the rest, for ``problem add-season``."""
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    for i, (img, label) in enumerate(zip(digits.images, digits.target)):
        if (i % NEW_DATA_EVERY == NEW_DATA_EVERY - 1) != new_data:
            continue
        sub = folder / str(label)
        sub.mkdir(parents=True, exist_ok=True)
        Image.fromarray((img * 255 // 16).astype("uint8")).save(sub / f"{i}.png")


def doc_block(name: str) -> str:
    """The fenced block after ``<!-- improver:NAME -->`` in docs/improvers.md."""
    found = re.search(rf"<!-- improver:{re.escape(name)} -->\n```\w*\n(.*?)```", DOC.read_text(), re.S)
    assert found is not None, f"docs/improvers.md has no block {name}"
    return found.group(1)


SHIMS = 'set -euo pipefail\ndaimon-node() { "$DAIMON_PYTHON" -m daimon_node.cli "$@"; }\n' \
        'python() { "$DAIMON_PYTHON" "$@"; }\n'


def run_doc_block(name: str, env: dict[str, str], cwd: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    """Run a block of the page with bash, as a user pastes it, with this checkout's CLI and Python."""
    full_env = dict(os.environ, **env, DAIMON_PYTHON=sys.executable, PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")
    return subprocess.run(["bash", "-c", SHIMS + doc_block(name)], cwd=cwd, env=full_env, capture_output=True,
                          text=True, timeout=timeout)


def cli_json(*args: str, timeout: float = 120) -> Any:
    done = subprocess.run([sys.executable, "-m", "daimon_node.cli", *args, "--json"], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)
    assert done.returncode == 0, f"{args}: {done.stderr}"
    return json.loads(done.stdout)


class Competition:
    """The running network and the improver's working directory."""

    def __init__(self, plan: TestnetPlan, net: Testnet, work: Path, improver_keys: Path, user_keys: Path) -> None:
        self.plan, self.net, self.work = plan, net, work
        self.improver_keys, self.user_keys = improver_keys, user_keys
        self.chain = plan.chain_id.hex()
        self.port = plan.rpc_ports[1]
        self.rpc = f"http://127.0.0.1:{self.port}"

    def env(self, steps: int, model: str) -> dict[str, str]:
        """The page's settings block, for this network."""
        return {"PROBLEM": str(self.plan.problem_dir), "CHAIN": self.chain, "KEYS": str(self.improver_keys),
                "RPC": self.rpc, "STEPS": str(steps), "MODEL": model}

    def season(self) -> dict[str, Any] | None:
        summary = try_call(self.port, lambda c: c.get_problem(self.chain))
        return None if summary is None else summary.get("season")

    def train(self, steps: int, model: str) -> None:
        """Section 1 of the page (no node needed). Starting torch takes several seconds on a loaded
        machine; bounded by T_p plus a period, four times over."""
        done = run_doc_block("train", self.env(steps, model), self.work, 4 * (T_P + T_B))
        assert done.returncode == 0, f"train: {done.stdout}\n{done.stderr}"

    def register(self, steps: int, model: str) -> None:
        """The page's register block (``--wait``: three periods plus grace)."""
        done = run_doc_block("register", self.env(steps, model), self.work, 3 * T_B + GRACE + 60)
        assert done.returncode == 0, f"register: {done.stdout}\n{done.stderr}"

    def submit(self, steps: int, model: str) -> str:
        """The page's submit block: submit and reveal, once more if the proof lost its period (as the
        page says). Returns the model's digest."""
        tries = []
        for _ in range(2):
            # submit: a period plus grace to find a slot; reveal --wait: two periods plus grace
            done = run_doc_block("submit", self.env(steps, model), self.work, 3 * T_B + 2 * GRACE + 60)
            tries.append(done.stdout + done.stderr)
            if done.returncode == 0:
                return model_digest((self.work / model).read_bytes()).hex()
            assert "not anchored" in done.stderr, tries
        pytest.fail(f"{model}: no anchored proof in two tries: {tries}")

    def wait_started(self) -> None:
        """Until the Problem block: t0 is START_DELAY after the problem was made, T_p later the
        block; a minute more for four node processes to start on a loaded machine."""
        wait_for("the Problem block", lambda: (try_call(self.port, lambda c: c.block_number(self.chain)) or -1) >= 0,
                 START_DELAY + T_P + 60)

    def prepare_next(self, steps: int, model: str) -> None:
        """The next season's model, trained and registered while the first one is in play."""
        self.train(steps, model)
        self.wait_started()
        self.register(steps, model)


def seal_season_one(comp: Competition, new_data: Path) -> None:
    """The contributor seals season 1 from new data while season 0 runs (``problem add-season``, signed
    with node 0's key, the problem's creator); then wait until season 1 is open and sealed (bound:
    season 0 ends at period 5, its reveal window is 2 periods, the queued holdout opens in the block
    that judges it, one period more)."""
    added = cli_json("problem", "add-season", "--problem", str(comp.plan.problem_dir), "--data", str(new_data),
                     "--key-dir", str(comp.plan.directory / "node0"), "--rpc", f"http://127.0.0.1:{comp.plan.rpc_ports[0]}",
                     "--wait")
    assert added["m_h"] > 0, added
    season = wait_for("season 1 sealed", lambda: (s := comp.season()) is not None and s["index"] == 1 and s["sealed"]
                      and s, (SEASON_PERIODS + REVEAL_WINDOW + 3) * T_B + T_P)
    # The improver's node must hold the new Z_h to prove on it: it fetches it over p2p (a period is plenty).
    z_h = season["holdout"]["z_h_id"]
    wait_for("the new Z_h on the improver's node", lambda: try_call(comp.port, lambda c: c.get_content(z_h)), 2 * T_B)


def validator_leaves(comp: Competition) -> dict[str, Any]:
    """Node 3 unbonds (once its role's bond is in a block) and withdraws its bond with the CLI."""
    node3 = comp.plan.directory / "node3"
    bond = load_problem(comp.plan.problem_dir).params.validator_bond
    address = "0x" + comp.plan.keys[3].address
    wait_for("node 3's validator bond", lambda: (b := try_call(comp.port, lambda c: c.get_balance(comp.chain, address)))
             is not None and int(b["locked"]) == bond, 4 * T_B + GRACE)  # as --wait allows a tx, plus a period
    mine = ("--key-dir", str(node3), "--rpc", comp.rpc)
    unbonding = cli_json("validator", "unbond", *mine, "--wait")
    until = unbonding["withdrawable_from"]
    wait_for(f"period {until}", lambda: (p := try_call(comp.port, lambda c: c.period(comp.chain))) is not None
             and p["period"] >= until, (UNBONDING + 2) * T_B)
    return cli_json("validator", "withdraw", *mine, "--wait")


def user_channel(comp: Competition) -> dict[str, Any]:
    """The market user locks a deposit for node 2 (which runs no runner role, so redeems nothing),
    then closes the channel from its expiry period on."""
    mine = ("--runner", comp.plan.keys[2].address, "--key-dir", str(comp.user_keys), "--rpc", comp.rpc)
    opened = cli_json("channel", "open", *mine, "--amount", str(DEPOSIT), "--periods", str(CHANNEL_PERIODS), "--wait")
    expires = opened["expires_period"]
    wait_for(f"period {expires}", lambda: (p := try_call(comp.port, lambda c: c.period(comp.chain))) is not None
             and p["period"] >= expires, (CHANNEL_PERIODS + 2) * T_B)
    closed = cli_json("channel", "close", *mine, "--wait")
    assert closed["refund"] == str(DEPOSIT)
    return closed


def test_pytorch_improver_vests_two_seasons_and_every_balance_adds_up(tmp_path: Path) -> None:
    pytest.importorskip("torch", reason="the page trains with PyTorch: the 'train' extra")
    images, work, new_images = tmp_path / "my-images", tmp_path / "improver-work", tmp_path / "new-images"
    write_digit_pngs(images)
    write_digit_pngs(new_images, new_data=True)
    work.mkdir()
    (work / "train_cnn.py").write_text(doc_block("train_cnn.py"))  # "Save this as train_cnn.py"
    improver_dir, user_dir = tmp_path / "improver", tmp_path / "user"
    improver, user = init_data_dir(improver_dir), init_data_dir(user_dir)
    plan = prepare_testnet(tmp_path / "net", 4, t_p=T_P, t_b=T_B, grace=GRACE, base_port=free_base_port(4),
                           start_delay=START_DELAY, data=images, holdout_fraction=0.2, seasons=1,
                           season_periods=SEASON_PERIODS, reveal_window=REVEAL_WINDOW, unbonding_periods=UNBONDING,
                           extra_accounts=(improver.address_bytes, user.address_bytes), quorum_ppb=QUORUM_PPB)
    problem = load_problem(plan.problem_dir)
    assert problem.params.input_spec.dtype == "uint8" and problem.holdout is not None
    net = Testnet(plan)
    net.start()
    comp = Competition(plan, net, work, improver_dir, user_dir)
    try:
        comp.train(STEPS[0], "cnn-a.onnx")  # during T_p
        comp.wait_started()
        with ThreadPoolExecutor(max_workers=3) as pool:
            leaving = pool.submit(validator_leaves, comp)
            channel = pool.submit(user_channel, comp)
            next_model = pool.submit(comp.prepare_next, STEPS[1], "cnn-b.onnx")
            comp.register(STEPS[0], "cnn-a.onnx")
            first = comp.submit(STEPS[0], "cnn-a.onnx")
            next_model.result()
            seal_season_one(comp, new_images)
            second = comp.submit(STEPS[1], "cnn-b.onnx")
            withdrawn, closed = leaving.result(), channel.result()
        assert withdrawn["amount"] == str(problem.params.validator_bond) and closed["refund"] == str(DEPOSIT)
        wait_for("season 1 judged", lambda: (s := comp.season()) is not None and s["index"] == 2,
                 (SEASON_PERIODS + REVEAL_WINDOW + 2) * T_B)
        net.check()
    finally:
        net.stop()
    check_ledger(replay_chain(plan.directory / "node0", plan.chain_id), plan, (first, second),
                 improver.address_bytes, user.address_bytes)
    check_season_locks(plan, improver.address_bytes)


def check_season_locks(plan: TestnetPlan, improver: bytes) -> None:
    """Block by block: in a season the improver's reward is minted locked and its improver bond stays
    held, so right after each settlement it has exactly ``improver_bond + reward`` locked; the judge
    that vests the season unlocks both (nothing stays locked)."""
    from chain.store import ChainStore
    from chain.state import State
    from chain.transition import process_block
    from daimon_node.daemon.chains import content_env
    from p2p import ContentStore

    params = load_problem(plan.problem_dir).params
    node0 = plan.directory / "node0"
    env = content_env(ContentStore(node0 / "content"))
    seen = {"settled": 0, "judged": 0}
    with ChainStore(node0 / "chains" / plan.chain_id.hex()) as store:
        state = State()
        for height in range(store.height + 1):
            block = store.get_block_by_height(height)
            assert block is not None
            outcome = process_block(state, block, env)
            state, receipt = outcome.state, outcome.receipt
            locked = get_account(state, improver).locked
            if receipt.season:
                assert locked == 0, (height, receipt.season, locked)
                seen["judged"] += 1
            elif receipt.settlement is not None and receipt.settlement.outcome == "settled":
                assert locked == params.improver_bond + receipt.settlement.improver_reward, (height, locked)
                seen["settled"] += 1
    assert seen == {"settled": 2, "judged": 2}, seen


def check_ledger(replay: Replay, plan: TestnetPlan, digests: tuple[str, str], improver: bytes, user: bytes) -> None:
    """Every account's holdings from the rules: genesis, plus vested rewards (the reward formula
    against the previous distance, validators paid by position), plus fees earned committing, minus
    fees paid; locked only what is still bonded."""
    params = load_problem(plan.problem_dir).params
    settled = [r.settlement for r in replay.receipts if r.settlement is not None and r.settlement.outcome == "settled"]
    assert [s.improver for s in settled] == [improver, improver], [(s.improver.hex()[:8], s.distances) for s in settled]
    notes = [r.season for r in replay.receipts if r.season]
    assert any("season 0 revealed: 1/1 improvements vested" in n for n in notes), notes
    assert any("season 1 revealed: 1/1 improvements vested" in n for n in notes), notes
    earned: dict[bytes, int] = {}
    d_c = (C.PPB,)
    for s in settled:
        reward = improvement_reward(s.distances[0], d_c[0], params.reward_a, params.reward_scale)
        assert s.improver_reward == reward
        assert [a for _, a in s.validator_rewards] == [validator_reward(reward, p)
                                                       for p in range(1, len(s.validator_rewards) + 1)]
        earned[improver] = earned.get(improver, 0) + reward
        for addr, amount in s.validator_rewards:
            earned[addr] = earned.get(addr, 0) + amount
        d_c = s.distances
    meta = get_meta(replay.state)
    assert meta.confirmed is not None and meta.confirmed.digest.hex() == digests[1] and meta.burned == 0
    assert meta.minted == sum(earned.values())
    blocks = list(zip(replay.blocks[1:], replay.receipts[1:]))
    fee_of = {address_bytes(tx.sender): 0 for b, _ in blocks for tx in b.body.transactions}
    for b, _ in blocks:
        for tx in b.body.transactions:
            assert tx.fee == params.min_fee  # every command and role pays the problem's minimum
            fee_of[address_bytes(tx.sender)] += tx.fee
    locked = {k.address_bytes: params.validator_bond for k in plan.keys[:3]}  # nodes 0-2 still validate
    for addr in [*(k.address_bytes for k in plan.keys), improver, user]:
        got = sum(r.fees for b, r in blocks if address_bytes(b.header.committer) == addr)
        account = get_account(replay.state, addr)
        expected = GENESIS + earned.get(addr, 0) + got - fee_of.get(addr, 0)
        assert (account.balance + account.locked, account.locked) == (expected, locked.get(addr, 0)), addr.hex()
    # The improver sent two registrations; node 3 its role's bond, unbond and withdraw; the user open and close.
    assert fee_of[improver] == 2 * params.min_fee and fee_of[user] == 2 * params.min_fee
    assert fee_of[plan.keys[3].address_bytes] == 3 * params.min_fee
    total = sum(get_account(replay.state, a).balance + get_account(replay.state, a).locked for a in fee_of)
    assert total == GENESIS * (len(plan.keys) + 2) + meta.minted
    assert all(r.settlement is None or r.settlement.outcome == "settled" for r in replay.receipts)  # none failed or void
