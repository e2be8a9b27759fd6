"""Shared by the interop tests: Node.js with the pinned packages of ``interop/js`` (or a skip
that says why), and the node-process helpers of ``tests/daimon_node`` (``netutil``)."""

from __future__ import annotations

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
    # npm writes node_modules/.package-lock.json last: without it an earlier install did not finish.
    if not (JS_DIR / "node_modules" / ".package-lock.json").exists():
        try:
            done = subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=JS_DIR, capture_output=True,
                                  text=True, timeout=NPM_CI_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            pytest.skip(f"npm ci in interop/js did not finish in {NPM_CI_TIMEOUT_S} s (no registry?)")
        if done.returncode != 0:
            tail = " | ".join(done.stderr.strip().splitlines()[-3:])
            pytest.skip(f"npm ci failed in interop/js (no registry?): {tail}")
    return node


@pytest.fixture(scope="session")
def js_dir() -> Path:
    """``interop/js``: the follower and its pinned packages."""
    return JS_DIR
