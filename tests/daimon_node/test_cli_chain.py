"""The user-facing CLI against a real 2-node testnet: status, problem list/show, tx transfer, rate, model
register/submit/reveal, validator bond/unbond/withdraw, channel open/close, and one-line errors.

One testnet (two node processes on 127.0.0.1, free ports, T_p=6 s, T_b=4 s, grace 2 s) serves the whole
module; it is stopped in the fixture's ``finally``. The CLI runs as a subprocess, as a user runs it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import Any, Iterator

import pytest
import tomli_w

from daimon_node.rpc.client import RpcClient
from daimon_node.keystore import init_data_dir
from daimon_node.proofs.problem_kit import load_problem
from daimon_node.harness.testnet import Testnet, TestnetPlan, prepare_testnet
from netutil import free_base_port

pytestmark = pytest.mark.slow

T_P, T_B, GRACE = 6, 4, 2
# A bond unbonds for 4 periods: after `validator unbond --wait` returns (the block of period k is made at
# k's end, at most GRACE late), the clock is in k + 1, so `withdraw` sees "still unbonding" for two whole
# periods (8 s) however slow the CLI starts; with the default 2 it would have under T_B - GRACE = 2 s.
UNBONDING = 4




def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "daimon_node.cli", *args], capture_output=True, text=True,
                          timeout=timeout)


def ok(*args: str) -> str:
    r = cli(*args)
    assert r.returncode == 0, f"{args}: rc {r.returncode}\n{r.stdout}\n{r.stderr}"
    return r.stdout


def ok_json(*args: str) -> Any:
    return json.loads(ok(*args, "--json"))


def fails_one_line(*args: str) -> str:
    r = cli(*args)
    assert r.returncode == 1, f"{args}: rc {r.returncode}\n{r.stdout}\n{r.stderr}"
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    return lines[0]


class Net:
    def __init__(self, plan: TestnetPlan, tmp: Path) -> None:
        self.plan = plan
        self.tmp = tmp
        self.rpc = f"http://127.0.0.1:{plan.rpc_ports[0]}"
        self.chain = plan.chain_id.hex()
        self.client = RpcClient(self.rpc)

    def key_dir(self, name: str) -> Path:
        d = self.tmp / name
        init_data_dir(d, exist_ok=True)
        return d


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Net]:
    tmp = tmp_path_factory.mktemp("cli_chain")
    plan = prepare_testnet(tmp / "net", 2, t_p=T_P, t_b=T_B, grace=GRACE, base_port=free_base_port(2), start_delay=2,
                           unbonding_periods=UNBONDING)
    # Node 1's improver role would compete with the model the tests submit: switch it off.
    cfg = tomllib.loads(plan.configs[1].read_text())
    cfg["roles"]["improver"]["enabled"] = False
    plan.configs[1].write_text(tomli_w.dumps(cfg))
    testnet = Testnet(plan)
    try:
        testnet.start()
        n = Net(plan, tmp)
        deadline = time.monotonic() + 90
        while True:  # the Problem block
            try:
                if n.client.block_number(plan.chain_id) >= 0 and n.client.peer_count() >= 1:
                    break
            except Exception:
                pass
            assert time.monotonic() < deadline, "no Problem block within 90 s"
            assert testnet.alive() == [0, 1], "a node process died"
            time.sleep(0.5)
        yield n
    finally:
        testnet.stop()


def test_status_and_problem_list(net: Net) -> None:
    status = ok_json("status", "--rpc", net.rpc)
    assert status["healthy"] is True
    [chain] = status["chains"]
    assert chain["chain"] == "0x" + net.chain
    assert chain["height"] >= 0 and chain["period"] >= 1 and 0 <= chain["remaining_s"] <= T_B
    assert "height" in ok("status", "--rpc", net.rpc)

    problems = ok_json("problem", "list", "--rpc", net.rpc)
    assert [p["chain"] for p in problems] == ["0x" + net.chain]
    assert net.chain in ok("problem", "list", "--rpc", net.rpc)

    shown = ok_json("problem", "show", net.chain, "--rpc", net.rpc)
    assert shown["params"]["t_b"] == T_B and shown["d_c_ppb"] == [10**9]
    assert shown["period"]["period"] >= 1
    assert "digits-testnet" in ok("problem", "show", "0x" + net.chain, "--rpc", net.rpc)
    offline = json.loads(ok("problem", "show", str(net.plan.problem_dir)))  # a directory: the offline summary
    assert offline["chain_id"] == net.chain


def balance(net: Net, address: bytes) -> int:
    return net.client.get_balance(net.plan.chain_id, address)["spendable"]


def test_transfer_wait_moves_amount_and_fee_exactly(net: Net) -> None:
    node0 = net.plan.directory / "node0"
    a, b = net.key_dir("alice"), net.key_dir("bob")
    a_keys, b_keys = init_data_dir(a, exist_ok=True), init_data_dir(b, exist_ok=True)
    funded = ok_json("tx", "transfer", "--chain", net.chain, "--to", a_keys.address, "--amount", "2.5", "--tokens",
                     "--key-dir", str(node0), "--rpc", net.rpc, "--wait")
    assert funded["amount"] == str(25 * 10**17) and funded["included"]["height"] >= 1
    assert balance(net, a_keys.address_bytes) == 25 * 10**17

    min_fee = load_problem(net.plan.problem_dir).params.min_fee
    amount, fee = 10**18 + 7, min_fee + 12345  # an explicit fee above the problem's floor
    before_a, before_b = balance(net, a_keys.address_bytes), balance(net, b_keys.address_bytes)
    sent = ok_json("tx", "transfer", "--chain", net.chain, "--to", "0x" + b_keys.address, "--amount", str(amount),
                   "--fee", str(fee), "--key-dir", str(a), "--rpc", net.rpc, "--wait")
    assert sent["tx_hash"].startswith("0x") and sent["nonce"] == 0
    block = net.client.get_block_by_number(net.plan.chain_id, sent["included"]["height"])
    assert sent["tx_hash"] in block["transactions"]
    assert balance(net, a_keys.address_bytes) == before_a - amount - fee
    assert balance(net, b_keys.address_bytes) == before_b + amount

    # Text output: the hash first (no --wait: returns at once).
    out = ok("tx", "transfer", "--to", b_keys.address, "--amount", "1", "--key-dir", str(a), "--rpc", net.rpc)
    assert out.splitlines()[0].startswith("0x") and len(out.splitlines()[0]) == 66


def test_rate_up_changes_reputation(net: Net) -> None:
    target = init_data_dir(net.key_dir("carol"), exist_ok=True)
    before = net.client.get_reputation(net.plan.chain_id, target.address_bytes)
    out = ok_json("rate", "--chain", net.chain, "--target", target.address, "--up",
                  "--key-dir", str(net.plan.directory / "node0"), "--rpc", net.rpc, "--wait")
    assert out["included"] is not None and out["score"] == 1
    after = net.client.get_reputation(net.plan.chain_id, target.address_bytes)
    assert after["score"] == before["score"] + 1 and after["ratings"] == before["ratings"] + 1
    assert out["reputation"]["score"] == after["score"]


def test_user_mistakes_are_one_line_exit_1(net: Net) -> None:
    from concurrent.futures import ThreadPoolExecutor

    node0 = str(net.plan.directory / "node0")
    bob = init_data_dir(net.key_dir("bob"), exist_ok=True).address
    proof = net.tmp / "stray.poi"  # a PoI no block anchors: its reveal is refused before it leaks the labels
    ok("model", "prove", str(net.plan.models["weak"]), "--problem", str(net.plan.problem_dir), "--key-dir", node0,
       "--out", str(proof))
    down = f"http://127.0.0.1:{free_base_port()}"  # nothing listens there
    tx = ("tx", "transfer", "--key-dir", node0, "--rpc", net.rpc)
    cases = {
        "--to address": (*tx, "--chain", net.chain, "--to", "0x12zz", "--amount", "1"),
        "40 hex digits": (*tx, "--chain", net.chain, "--to", "abcd", "--amount", "1"),
        "unknown chain": (*tx, "--chain", "ab" * 32, "--to", bob, "--amount", "1"),
        "no chain on the node": (*tx, "--chain", "abcdef0123", "--to", bob, "--amount", "1"),
        "--tokens": (*tx, "--chain", net.chain, "--to", bob, "--amount", "1.5"),
        "below amount + fee": (*tx, "--chain", net.chain, "--to", bob, "--amount", str(10**30)),
        "--up or --down": ("rate", "--chain", net.chain, "--target", bob, "--key-dir", node0, "--rpc", net.rpc),
        "cannot rate yourself": ("rate", "--target", init_data_dir(Path(node0), exist_ok=True).address, "--up",
                                 "--key-dir", node0, "--rpc", net.rpc),
        "code -32001": ("problem", "show", "cd" * 32, "--rpc", net.rpc),
        "neither": ("problem", "show", "not-a-chain", "--rpc", net.rpc),
        "not anchored": ("model", "reveal", str(proof) + ".reveal", "--rpc", net.rpc),
        "not a Reveal": ("model", "reveal", str(proof), "--rpc", net.rpc),
        "no node key": ("model", "register", str(net.plan.models["weak"]), "--key-dir", str(net.tmp / "nokey"),
                        "--rpc", net.rpc),
        "cannot reach node": ("status", "--rpc", down),
        "cannot reach node at": ("problem", "list", "--rpc", down),
    }
    with ThreadPoolExecutor(max_workers=8) as pool:
        lines = dict(zip(cases, pool.map(lambda args: fails_one_line(*args), cases.values())))
    for expected, line in lines.items():
        assert expected in line, (expected, line)


def test_model_register_submit_reveal_settles(net: Net) -> None:
    """The improver's cycle by hand: register (wait), PoI for period k, reveal in k+1, the block settles it."""
    alice = net.key_dir("alice")
    keys = init_data_dir(alice, exist_ok=True)
    if balance(net, keys.address_bytes) < 10**18:
        ok("tx", "transfer", "--to", keys.address, "--amount", "2", "--tokens", "--key-dir",
           str(net.plan.directory / "node0"), "--rpc", net.rpc, "--wait")
    model = net.plan.models["mlp"]
    reg = ok_json("model", "register", str(model), "--key-dir", str(alice),
                  "--rpc", net.rpc, "--wait")
    assert reg["included"] is not None
    chain = net.plan.chain_id
    for attempt in range(3):
        reveal = net.tmp / f"mlp.{attempt}.reveal"
        sub = ok_json("model", "submit", str(model), "--problem", str(net.plan.problem_dir), "--key-dir", str(alice),
                      "--reveal-out", str(reveal), "--rpc", net.rpc)
        assert sub["improves"] and reveal.stat().st_mode & 0o777 == 0o600
        k = sub["period"]
        deadline = time.monotonic() + 4 * T_B
        while net.client.period(chain)["period"] <= k and time.monotonic() < deadline:
            time.sleep(0.1)
        r = cli("model", "reveal", str(reveal), "--rpc", net.rpc, "--json")
        if r.returncode == 0:
            break
        assert "Traceback" not in r.stderr  # not anchored (lost the period's race): try once more
    else:
        pytest.fail(f"no anchored PoI in 3 tries: {r.stderr}")
    assert json.loads(r.stdout)["poi_hash"] == sub["poi_hash"]
    deadline = time.monotonic() + 4 * T_B
    best = None
    while time.monotonic() < deadline:
        best = net.client.best_model(chain)
        if best and best["model_digest"] == "0x" + sub["model_digest"]:
            break
        time.sleep(0.3)
    assert best and best["model_digest"] == "0x" + sub["model_digest"], best
    assert best["prover"] == "0x" + keys.address and best["distance_ppb"] == sub["distances_ppb"][0]
    status = ok_json("status", "--rpc", net.rpc)
    assert status["chains"][0]["best"]["model_digest"] == "0x" + sub["model_digest"]


def wait_for_period(net: Net, period: int) -> None:
    """Until the chain's clock reaches ``period`` (bounded: the periods left, plus one for slack)."""
    chain = net.plan.chain_id
    left = period - net.client.period(chain)["period"]
    deadline = time.monotonic() + (max(0, left) + 1) * T_B
    while net.client.period(chain)["period"] < period:
        assert time.monotonic() < deadline, f"period {period} not reached"
        time.sleep(0.2)


def funded_key(net: Net, name: str, tokens: str) -> tuple[Path, Any]:
    key_dir = net.key_dir(name)
    keys = init_data_dir(key_dir, exist_ok=True)
    ok("tx", "transfer", "--to", keys.address, "--amount", tokens, "--tokens", "--key-dir",
       str(net.plan.directory / "node0"), "--rpc", net.rpc, "--wait")
    return key_dir, keys


def locks(net: Net, keys: Any) -> dict[str, Any]:
    """``status --key-dir`` as JSON: the account's parts, which must add up to its locked balance."""
    [chain] = ok_json("status", "--rpc", net.rpc, "--address", keys.address)["chains"]
    account = chain["account"]
    assert sum(int(p["amount"]) for p in account["parts"]) == int(account["locked"]), account
    return account


def test_validator_bond_unbond_withdraw_returns_the_bond_to_the_base_unit(net: Net) -> None:
    """Bond, unbond, withdraw: each command pays the problem's minimum fee, the bond comes back whole,
    and every refusal on the way (nothing to unbond or withdraw, bonded twice, active, still
    unbonding until period P) is one line, before any fee is spent."""
    params = load_problem(net.plan.problem_dir).params
    fee, bond = params.min_fee, params.validator_bond
    key_dir, keys = funded_key(net, "validator", "2")
    start = balance(net, keys.address_bytes)
    assert start == 2 * 10**18
    mine = ("--key-dir", str(key_dir), "--rpc", net.rpc)
    assert "nothing to unbond" in fails_one_line("validator", "unbond", *mine)
    assert "nothing to withdraw" in fails_one_line("validator", "withdraw", *mine)

    bonded = ok_json("validator", "bond", *mine, "--wait")
    assert bonded["included"] is not None and bonded["fee"] == str(fee) and bonded["bond"] == str(bond)
    [part] = locks(net, keys)["parts"]
    assert (part["kind"], part["amount"], part["free_from"]) == ("validator_bond", str(bond), None)
    assert "already has a bond (active)" in fails_one_line("validator", "bond", *mine)
    assert "the bond is active" in fails_one_line("validator", "withdraw", *mine)

    unbonding = ok_json("validator", "unbond", *mine, "--wait")
    until = unbonding["withdrawable_from"]
    assert until == unbonding["included"]["period"] + UNBONDING
    line = fails_one_line("validator", "withdraw", *mine)
    assert f"still unbonding until period {until}" in line, line
    assert f"already unbonding until period {until}" in fails_one_line("validator", "unbond", *mine)
    account = locks(net, keys)
    assert [(p["kind"], p["amount"], p["free_from"]) for p in account["parts"]] == [("unbonding", str(bond), until)]
    text = ok("status", "--rpc", net.rpc, "--key-dir", str(key_dir))
    assert f"unbonding until period {until}" in text and "daimon-node validator withdraw" in text
    assert balance(net, keys.address_bytes) == start - bond - 2 * fee  # nonce order: no fee for the refusals

    wait_for_period(net, until)
    withdrawn = ok_json("validator", "withdraw", *mine, "--wait")
    assert withdrawn["included"]["period"] >= until and withdrawn["amount"] == str(bond)
    assert balance(net, keys.address_bytes) == start - 3 * fee
    after = locks(net, keys)
    assert (after["locked"], after["parts"]) == ("0", [])
    assert "nothing to withdraw" in fails_one_line("validator", "withdraw", *mine)


def test_channel_close_returns_the_deposit_after_expiry(net: Net) -> None:
    """A deposit locked for a runner comes back whole (nothing redeemed) from its expiry period on;
    closing before then, or a channel that is not open, is refused in one line."""
    params = load_problem(net.plan.problem_dir).params
    fee = params.min_fee
    key_dir, keys = funded_key(net, "payer", "1")
    runner = init_data_dir(net.key_dir("runner-only"), exist_ok=True)
    start = balance(net, keys.address_bytes)
    mine = ("--runner", runner.address, "--key-dir", str(key_dir), "--rpc", net.rpc)
    assert "no open channel" in fails_one_line("channel", "close", *mine)

    # 4 periods: after --wait the clock is at most one period on, so "not expired" holds for 2 more (8 s)
    opened = ok_json("channel", "open", *mine, "--amount", "5000", "--periods", "4", "--wait")
    expires = opened["expires_period"]
    channel = net.client.get_channel(net.plan.chain_id, keys.address_bytes, runner.address_bytes)
    assert channel["open"] and channel["deposit"] == "5000" and channel["expires_period"] == expires
    line = fails_one_line("channel", "close", *mine)
    assert f"channel not expired until period {expires}" in line, line
    [part] = locks(net, keys)["parts"]
    assert (part["kind"], part["amount"], part["free_from"], part["ref"]) == \
        ("channel_deposit", "5000", expires, "0x" + runner.address)
    assert balance(net, keys.address_bytes) == start - 5000 - fee

    wait_for_period(net, expires)
    closed = ok_json("channel", "close", *mine, "--wait")
    assert closed["refund"] == "5000" and closed["included"]["period"] >= expires
    assert balance(net, keys.address_bytes) == start - 2 * fee
    assert locks(net, keys)["parts"] == []
    assert "no open channel" in fails_one_line("channel", "close", *mine)


def test_web_page_shows_what_is_locked_as_status_does(net: Net) -> None:
    """The page (GET /?address=A) lists A's locked parts with the facts of ``status --address A``: each
    amount, why it is locked, the period it can come back from, and the command that returns it.
    Node 0 has an active validator bond (free_from null); a payer has a channel deposit that expires
    40 periods on (longer than this module runs, so the page and the CLI see the same parts)."""
    from html import unescape

    from test_web_page import CHROME_FLAGS, find_chromium

    chromium = find_chromium()
    key_dir, payer = funded_key(net, "page-payer", "1")
    runner = init_data_dir(net.key_dir("page-runner"), exist_ok=True)
    opened = ok_json("channel", "open", "--runner", runner.address, "--amount", "777", "--periods", "40",
                     "--key-dir", str(key_dir), "--rpc", net.rpc, "--wait")
    node0 = net.plan.keys[0]
    for keys in (payer, node0):
        account = locks(net, keys)
        assert account["parts"], account
        url = f"{net.rpc}/?chain=0x{net.chain}&address=0x{keys.address}"
        dom = subprocess.run([chromium, *CHROME_FLAGS, "--virtual-time-budget=10000", "--dump-dom", url],
                             capture_output=True, text=True, timeout=120)
        assert f'data-locks="0x{keys.address}"' in dom.stdout, dom.stderr[-2000:]
        rows = unescape(dom.stdout.split('id="locks"')[1].split("</table>")[0])
        for part in account["parts"]:
            assert f'data-units="{part["amount"]}"' in rows, (part, rows)
            if part["kind"] == "channel_deposit":
                assert part["free_from"] == opened["expires_period"] and part["action"] == "channel close"
                assert f"from period {part['free_from']}" in rows and "channel deposit to runner" in rows
                assert f"daimon-node channel close --runner 0x{runner.address}" in rows
            else:
                assert part["kind"] == "validator_bond" and part["free_from"] is None
                assert "validator bond, active" in rows and "daimon-node validator unbond" in rows
