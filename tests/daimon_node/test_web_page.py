"""The node's web page (GET /) in headless Chromium, over a live 4-node testnet (issue 8).

The page must render the testnet's problem with at least one Improvement block and a
settled improvement (the best-distance chart, the blocks table with the anchored proof
and its votes, rewards paid, top improvers/validators, offers). Chromium is Debian's
``chromium``: installed with apt-get when missing (as root), else the test is skipped
with the reason. A screenshot is written to the test's tmp dir.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from daimon_node.rpc.client import RpcClient
from daimon_node.errors import DaimonError

sys.path.insert(0, str(Path(__file__).parent))
from test_market_e2e import start_market_testnet  # noqa: E402
from netutil import free_base_port, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

CHROME_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]


def find_chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        pytest.skip("Debian's chromium is not installed and this user cannot apt-get install it")
    done = subprocess.run(["apt-get", "install", "-y", "chromium"], capture_output=True, text=True, timeout=600)
    path = shutil.which("chromium")
    if done.returncode != 0 or path is None:
        pytest.skip(f"apt-get install chromium failed (no package mirror reachable?): {done.stderr.strip()[-200:]}")
    return path


def dashboard(port: int, chain: str) -> Any:
    try:
        with RpcClient(f"http://127.0.0.1:{port}", timeout=20.0) as c:
            return c.call("daimon_dashboard", chain)
    except (DaimonError, OSError):
        return None


def test_page_renders_the_testnets_problem(tmp_path: Path) -> None:
    chromium = find_chromium()
    base = free_base_port(4)
    plan, net = start_market_testnet(tmp_path, base)
    chain = "0x" + plan.chain_id.hex()
    port = plan.rpc_ports[0]
    try:
        def ready() -> Any:
            d = dashboard(port, chain)
            if not d or d["best"] is None or not any(o["current"] for o in d["offers"]):
                return None
            return d

        data = wait_for("a settled improvement and a current offer", ready, 240)
        improvement_blocks = [b for b in data["blocks"] if b["kind"] == "improvement"]
        assert improvement_blocks and any(b["anchor"] for b in improvement_blocks)
        assert len(data["history"]) >= 2 and data["improvers"] and data["validators"]

        url = f"http://127.0.0.1:{port}/"
        dom = subprocess.run([chromium, *CHROME_FLAGS, "--virtual-time-budget=15000", "--dump-dom", url],
                             capture_output=True, text=True, timeout=120)
        html = dom.stdout
        assert 'data-ready="1"' in html, dom.stderr[-2000:]
        assert "digits-testnet" in html
        assert 'id="chart-svg"' in html and "<circle" in html  # the best-distance chart has points
        assert "improvement" in html and "settled" in html and "votes:" in html
        assert "Top improvers" in html and "none yet" not in html.split("Top improvers")[1].split("</table>")[0]
        assert plan.keys[3].address[:8] in html  # the runner's offer
        shot = tmp_path / "page.png"
        done = subprocess.run([chromium, *CHROME_FLAGS, f"--screenshot={shot}", "--window-size=1280,2000",
                               "--virtual-time-budget=15000", url], capture_output=True, text=True, timeout=120)
        assert shot.exists() and shot.stat().st_size > 10_000, done.stderr[-2000:]
        out = os.environ.get("DAIMON_SCREENSHOT_DIR")
        if out:
            shutil.copy(shot, Path(out) / "page.png")
        print(f"screenshot: {shot}")
    finally:
        net.stop()
