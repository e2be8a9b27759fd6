"""`daimon-node testnet` cannot hang or leak: a taken port fails at once, a dead node stops the
testnet with its log, and SIGTERM or the supervisor's own death stops every node."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import psutil
import pytest

from netutil import free_base_port, try_call, wait_for

from daimon_node.harness.testnet import NodeDied, Testnet, check_ports_free, log_tail, local_testnet_ports, PortInUse

NODES = 2
# Preparing 2 nodes trains the example models (about 10 s at load 2); each node then imports the
# stack and binds its ports. Generous multiples of those, so a loaded CI box does not flake.
UP_TIMEOUT = 150.0
# A death is noticed within one supervision interval (1 s) plus one progress tick (an RPC poll per
# node, 2 s timeout each); stopping waits up to 30 s for SIGTERM before SIGKILL.
NOTICE_AND_STOP = 1.0 + NODES * 2.0 + 30.0 + 15.0


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "daimon_node.cli", *args]


def start_testnet(tmp_path: Path) -> tuple[subprocess.Popen[bytes], list[psutil.Process], Path]:
    """A running 2-node testnet CLI, its node processes (once both answer RPC) and its output file."""
    directory, output = tmp_path / "net", tmp_path / "testnet.out"
    with open(output, "wb") as out:  # a file, not a pipe: nobody has to drain it while the test waits
        proc = subprocess.Popen(cli("testnet", "--nodes", str(NODES), "--dir", str(directory), "--duration", "300",
                                    "--t-p", "20", "--t-b", "6", "--grace", "3"),
                                stdout=out, stderr=subprocess.STDOUT)
    summary = wait_for("testnet.toml", lambda: (directory / "testnet.toml").exists(), UP_TIMEOUT)
    assert summary
    ports = tomllib.loads((directory / "testnet.toml").read_text())["rpc_ports"]
    wait_for("every node's RPC", lambda: all(try_call(p, lambda c: c.node_info()) for p in ports), UP_TIMEOUT)
    nodes = [c for c in psutil.Process(proc.pid).children() if "start" in c.cmdline()]
    assert len(nodes) == NODES
    return proc, nodes, output


def wait_gone(procs: list[psutil.Process], timeout: float) -> None:
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    assert not alive, f"still running: {[p.pid for p in alive]}"


def test_a_taken_port_fails_at_once_with_one_line(tmp_path: Path) -> None:
    base = free_base_port(NODES)
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", base + 100))  # node 0's RPC port
        holder.listen()
        started = time.monotonic()
        out = subprocess.run(cli("testnet", "--nodes", str(NODES), "--dir", str(tmp_path / "net"),
                                 "--base-port", str(base)), capture_output=True, text=True, timeout=60)
        took = time.monotonic() - started
    assert out.returncode == 1
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and f"port {base + 100} on 127.0.0.1 is in use" in lines[0], out.stderr
    assert took < 10.0, took  # the limit: before any preparation, so seconds at most
    assert not (tmp_path / "net").exists()


def test_check_ports_free_names_the_taken_port() -> None:
    base = free_base_port(NODES)
    check_ports_free(local_testnet_ports(base, NODES))
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", base + 1))
        with pytest.raises(PortInUse) as err:
            check_ports_free(local_testnet_ports(base, NODES))
    assert err.value.port == base + 1


def test_a_dead_node_stops_the_testnet_with_its_log(tmp_path: Path) -> None:
    proc, nodes, output = start_testnet(tmp_path)
    try:
        nodes[1].send_signal(signal.SIGKILL)
        proc.wait(timeout=NOTICE_AND_STOP)
        text = output.read_text("utf-8", "replace")
        assert proc.returncode == 1, text
        assert "node 1 exited with code -9" in text, text
        wait_gone(nodes, 5.0)
    finally:
        proc.kill()
        for n in nodes:
            if n.is_running():
                n.kill()


@pytest.mark.parametrize("how", ["sigterm", "sigkill"])
def test_stopping_the_supervisor_stops_every_node(tmp_path: Path, how: str) -> None:
    """SIGTERM: the CLI stops its nodes and exits 130. SIGKILL (nothing can run in the CLI): each node
    gets SIGTERM from the kernel (PR_SET_PDEATHSIG) and shuts down on its own."""
    if how == "sigkill" and not sys.platform.startswith("linux"):
        pytest.skip("the parent-death signal is Linux's prctl")
    proc, nodes, _ = start_testnet(tmp_path)
    try:
        if how == "sigterm":
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=NOTICE_AND_STOP)
            assert proc.returncode == 130
        else:
            proc.kill()
            proc.wait(timeout=10)
        wait_gone(nodes, NOTICE_AND_STOP)
    finally:
        proc.kill()
        for n in nodes:
            if n.is_running():
                n.kill()


def test_testnet_check_raises_node_died_with_the_log_tail(tmp_path: Path) -> None:
    """``Testnet.check`` on a process that exited: the index, the code and the last lines of its log."""
    from daimon_node.harness.testnet import TestnetPlan

    (tmp_path / "node0").mkdir()
    (tmp_path / "node0" / "node.err").write_text("".join(f"line {i}\n" for i in range(30)) + "OSError: [Errno 98] Address already in use\n")
    plan = TestnetPlan(tmp_path, [tmp_path / "node0.toml"], [], tmp_path, b"", [0], [0])
    net = Testnet(plan)
    net.procs[0] = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    net.procs[0].wait(timeout=30)
    with pytest.raises(NodeDied) as err:
        net.check()
    assert err.value.index == 0 and err.value.returncode == 3
    assert "Address already in use" in str(err.value) and "line 29" in str(err.value) and "line 0\n" not in str(err.value)
    assert log_tail(tmp_path / "missing.log") == ""
