"""``daimon-node init`` / ``keys show`` through the real console entry point."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

from chain.crypto import address_of


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "daimon_node.cli", *args], capture_output=True, text=True, timeout=120
    )


def test_help_lists_subcommands() -> None:
    out = run_cli("--help")
    assert out.returncode == 0
    for name in ("init", "keys"):
        assert name in out.stdout


def test_init_then_keys_show(tmp_path: Path) -> None:
    data = tmp_path / "node"
    out = run_cli("init", "--dir", str(data))
    assert out.returncode == 0, out.stderr
    key_file = data / "node_key"
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
    shown = run_cli("keys", "show", "--dir", str(data), "--json")
    assert shown.returncode == 0, shown.stderr
    info = json.loads(shown.stdout)
    assert info["address"] == address_of(bytes.fromhex(info["public_key"]))
    assert info["address"] in out.stdout


def test_init_refuses_to_overwrite(tmp_path: Path) -> None:
    data = tmp_path / "node"
    assert run_cli("init", "--dir", str(data)).returncode == 0
    before = (data / "node_key").read_text()
    again = run_cli("init", "--dir", str(data))
    assert again.returncode == 1
    assert again.stderr.strip().startswith("error:") and "refusing to overwrite" in again.stderr
    assert len(again.stderr.strip().splitlines()) == 1
    assert (data / "node_key").read_text() == before


def test_keys_show_without_init_is_one_clear_line(tmp_path: Path) -> None:
    out = run_cli("keys", "show", "--dir", str(tmp_path / "missing"))
    assert out.returncode == 1
    assert "daimon-node init" in out.stderr
    assert "Traceback" not in out.stderr
