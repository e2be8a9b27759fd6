"""The market end to end (issue 8): 4 node processes, a runner, a stale runner, a paying user.

Node 1 improves once (the "linear" example); node 3 runs the chain's best model at
price 7 per input; node 2 runs a fixed stale model ("weak"). The user (node 0's key) pays
node 3 through a payment channel with the ``daimon-node infer`` CLI and gets exactly
the scores the committed model gives locally; the runner redeems each voucher once;
a replayed voucher is refused; the stale runner is detected by digest; a rating
changes the runner's reputation.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tomli_w

from daimon_node.rpc.client import RpcClient
from daimon_node.errors import DaimonError
from daimon_node.harness.testnet import Testnet, prepare_testnet
from netutil import free_base_port, try_call, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

T_P, T_B, GRACE = 10, 6, 3
PRICE = 7  # per input
ROWS = 5  # inputs per call
COST = PRICE * ROWS  # what one call adds to the voucher
DEPOSIT = 2 * COST  # the channel pays exactly two calls


def configure_market(directory: Path, models: dict[str, Path]) -> None:
    """Node 1 improves with the linear model; node 3 runs the best model; node 2 serves a stale one."""
    for i in range(4):
        path = directory / f"node{i}.toml"
        cfg = tomllib.loads(path.read_text())
        improver = cfg["roles"]["improver"]
        if i == 1:
            improver.update(enabled=True, models=[str(models["linear"])])
        else:
            improver.update(enabled=False, models=[])
        if i == 3:
            cfg["roles"]["runner"] = {"enabled": True, "price": PRICE}
        if i == 2:
            cfg["roles"]["runner"] = {"enabled": True, "price": 1, "model": str(models["weak"])}
        path.write_text(tomli_w.dumps(cfg))


def start_market_testnet(tmp_path: Path, base: int) -> tuple[Any, Testnet]:
    plan = prepare_testnet(tmp_path / "net", 4, t_p=T_P, t_b=T_B, grace=GRACE, base_port=base, start_delay=8)
    configure_market(plan.directory, plan.models)
    net = Testnet(plan)
    net.start()
    return plan, net


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "daimon_node.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=dict(os.environ, PYTHONUNBUFFERED="1"))


def test_user_pays_runner_and_gets_the_committed_models_outputs(tmp_path: Path) -> None:
    import onnxruntime as ort

    from daimon_node.proofs.problem_kit import load_train_split

    base = free_base_port(4)
    plan, net = start_market_testnet(tmp_path, base)
    chain = "0x" + plan.chain_id.hex()
    port = plan.rpc_ports[0]
    rpc = f"http://127.0.0.1:{port}"
    user, runner, stale = plan.keys[0], plan.keys[3], plan.keys[2]
    try:
        best = wait_for("a settled model", lambda: try_call(port, lambda c: c.best_model(chain)), 180)

        def offer_of(keys: Any) -> Any:
            offers = try_call(port, lambda c: c.get_offers(chain)) or []
            return next((o for o in offers if o["provider"] == "0x" + keys.address), None)

        wait_for("the runner's offer of the best model",
                 lambda: (o := offer_of(runner)) is not None and o["model_digest"] == best["model_digest"], 90)
        wait_for("the stale runner's offer", lambda: offer_of(stale) is not None, 150)  # resent every 2 periods

        x_train, _ = load_train_split(plan.problem_dir)
        x = np.ascontiguousarray(x_train[:ROWS])
        np.save(tmp_path / "x.npy", x)
        linear = Path(plan.models["linear"]).read_bytes()
        sess = ort.InferenceSession(linear, providers=["CPUExecutionProvider"])
        expected = sess.run(None, {sess.get_inputs()[0].name: x})[0]

        # 1. pay and get the committed model's outputs (opens the channel first)
        args = ["infer", "--problem", chain, "--input", str(tmp_path / "x.npy"), "--max-price", "10",
                "--runner", runner.address, "--deposit", str(DEPOSIT), "--key-dir", str(plan.directory / "node0"),
                "--rpc", rpc, "--json"]
        done = cli(*args, timeout=180)
        assert done.returncode == 0, done.stderr
        out = json.loads(done.stdout)
        assert out["model_digest"] == best["model_digest"]
        np.testing.assert_allclose(np.array(out["scores"], dtype=np.float32), expected, rtol=0, atol=0)
        assert out["labels"] == [int(v) for v in expected.argmax(axis=1)]
        assert out["paid_cumulative"] == str(COST) and out["cost"] == str(COST)
        # 2. a second call pays one more call's cost, no new channel
        done = cli(*args)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["paid_cumulative"] == str(2 * COST)

        # 3. a replayed voucher is refused by the runner
        ledger = json.loads((plan.directory / "node0" / "vouchers.json").read_text())
        assert list(ledger.values())[0]["cumulative"] == 2 * COST
        from chain.crypto import address_bytes
        from daimon_node.market.messages import npy_bytes
        from daimon_node.market.vouchers import make_voucher

        replay = make_voucher(user, plan.chain_id, runner.address_bytes, 0, 2 * COST)
        err = None
        try:
            with RpcClient(rpc, timeout=60) as c:
                c.call("daimon_infer", chain, "0x" + runner.address, "0x" + replay.encode().hex(), "0x" + npy_bytes(x).hex())
        except DaimonError as exc:
            err = str(exc)
        assert err is not None and "replayed" in err
        over = make_voucher(user, plan.chain_id, runner.address_bytes, 0, DEPOSIT + 1)
        try:
            with RpcClient(rpc, timeout=60) as c:
                c.call("daimon_infer", chain, "0x" + runner.address, "0x" + over.encode().hex(), "0x" + npy_bytes(x).hex())
            err = None
        except DaimonError as exc:
            err = str(exc)
        assert err is not None and "overspent" in err

        # 4. the runner redeems on chain exactly what it was paid, once
        def channel() -> Any:
            return try_call(port, lambda c: c.call("daimon_getChannel", chain, "0x" + user.address, "0x" + runner.address))

        wait_for("the runner to redeem both calls", lambda: (ch := channel()) is not None and ch["redeemed"] == str(2 * COST), 90)
        bond = int(try_call(port, lambda c: c.get_problem(chain))["params"]["validator_bond"])
        time.sleep(2 * T_B)  # later blocks pay nothing more
        ch = channel()
        assert ch["redeemed"] == str(2 * COST) and ch["deposit"] == str(DEPOSIT)
        locked = try_call(port, lambda c: c.get_balance(chain, "0x" + user.address))["locked"]
        assert locked == bond + DEPOSIT - 2 * COST

        # 5. a runner serving a stale model is detected by digest
        done = cli("infer", "--problem", chain, "--input", str(tmp_path / "x.npy"), "--runner", stale.address,
                   "--key-dir", str(plan.directory / "node0"), "--rpc", rpc)
        assert done.returncode == 1 and "stale" in done.stderr, done.stderr
        done = cli("offers", chain, "--rpc", rpc)
        assert done.returncode == 0 and "STALE" in done.stdout and "current" in done.stdout

        # 6. ratings change reputation
        done = cli("rate", "--target", runner.address, "--up", "--chain", chain, "--key-dir",
                   str(plan.directory / "node0"), "--rpc", rpc, "--wait", timeout=120)
        assert done.returncode == 0, done.stderr
        rep = try_call(port, lambda c: c.get_reputation(chain, "0x" + runner.address))
        assert rep["score"] == 1 and rep["ratings"] == 1
        assert address_bytes(runner.public_key) == runner.address_bytes
    finally:
        net.stop()
