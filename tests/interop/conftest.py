"""Shared by the interop tests: Node.js with the pinned packages of ``interop/js`` (or a skip
that says why), and the node-process helpers of ``tests/daimon_node`` (``netutil``)."""

from __future__ import annotations

import fcntl
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "daimon_node"))

JS_DIR = Path(__file__).resolve().parents[2] / "interop" / "js"
MIN_NODE_MAJOR = 20  # the oldest Node.js the pinned packages run on (with lib/node20.mjs)
NPM_CI_TIMEOUT_S = 240  # a cold install of ~115 small packages; seconds when the npm cache has them


@pytest.fixture(scope="session")
def node_js() -> str:
    """The ``node`` executable, after ``npm ci`` if the pinned packages are not installed; or skip."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None:
        pytest.skip("no node (Node.js) on PATH")
    if npm is None:
        pytest.skip("no npm on PATH")
    version = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=30).stdout.strip()
    major = version.lstrip("v").split(".")[0]
    if not major.isdigit() or int(major) < MIN_NODE_MAJOR:
        pytest.skip(f"node {version or '(no version)'} is older than {MIN_NODE_MAJOR}")
    # Test workers (pytest-xdist) each run this fixture: one installs, the others wait for it
    # (`npm ci` starts by deleting node_modules, so two at once would break each other).
    with open(JS_DIR / "node_modules.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        install_failure = _npm_ci(npm)
    if install_failure is not None:
        pytest.skip(install_failure)
    return node


def _npm_ci(npm: str) -> str | None:
    """Install the pinned packages unless they are there; None, or why it failed."""
    # npm writes node_modules/.package-lock.json last: without it an earlier install did not finish.
    if (JS_DIR / "node_modules" / ".package-lock.json").exists():
        return None
    try:
        done = subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=JS_DIR, capture_output=True,
                              text=True, timeout=NPM_CI_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return f"npm ci in interop/js did not finish in {NPM_CI_TIMEOUT_S} s (no registry?)"
    if done.returncode != 0:
        tail = " | ".join(done.stderr.strip().splitlines()[-3:])
        return f"npm ci failed in interop/js (no registry?): {tail}"
    return None


@pytest.fixture(scope="session")
def js_dir() -> Path:
    """``interop/js``: the follower and its pinned packages."""
    return JS_DIR
