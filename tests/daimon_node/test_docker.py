"""The Dockerfile and docker-compose.yml, checked without a Docker engine.

``docker compose config`` / ``docker-compose config`` validate the compose file when
either tool is installed (neither needs an engine). The rest always runs: the
Dockerfile installs no ``train`` extra (no torch) and runs as a non-root user, and
``daimon-node testnet --prepare-only --docker`` writes configs whose addresses,
ports and paths match the compose file's static IPs, ports and mount.
"""

from __future__ import annotations

import ipaddress
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from daimon_node.cli.app import app
from daimon_node.cli.testnet import DOCKER_MOUNT, DOCKER_P2P_PORT, DOCKER_RPC_PORT, DOCKER_SUBNET
from daimon_node.config import load_config

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"


def compose_tool() -> list[str] | None:
    """A command that runs ``... config``: the compose plugin or docker-compose v1."""
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True, timeout=30)
        if probe.returncode == 0:
            return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return None


def parse_compose(text: str) -> dict:
    """The parts of docker-compose.yml the tests need, with PyYAML when installed."""
    try:
        import yaml
    except ImportError:
        return _parse_compose_lines(text)
    doc = yaml.safe_load(text)
    services = {}
    for name, svc in doc["services"].items():
        services[name] = {
            "ip": svc["networks"]["daimon"]["ipv4_address"],
            "command": list(svc["command"]),
            "ports": [str(p) for p in svc.get("ports", [])],
            "volumes": [str(v) for v in svc.get("volumes", [])],
            "healthcheck": "healthcheck" in svc,
        }
    subnet = doc["networks"]["daimon"]["ipam"]["config"][0]["subnet"]
    return {"services": services, "subnet": subnet}


def _parse_compose_lines(text: str) -> dict:
    """A fallback for this file's own layout: top-level keys, 2-space services, anchors merged."""
    blocks: dict[str, list[str]] = {}
    top = None
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if not line.startswith(" "):
            top = line.rstrip(":").split(":")[0]
            blocks.setdefault(top, [])
            continue
        blocks.setdefault(top or "", []).append(line)
    anchor = "\n".join(blocks.get("x-node", []))
    services: dict[str, dict] = {}
    name = None
    per: dict[str, list[str]] = {}
    for line in blocks["services"]:
        m = re.match(r"^  (\w+):\s*$", line)
        if m:
            name = m.group(1)
            per[name] = []
        elif name:
            per[name].append(line)
    for name, lines in per.items():
        body = "\n".join(lines)
        merged = (anchor + "\n" + body) if "<<: *node" in body else body
        services[name] = {
            "ip": re.search(r"ipv4_address:\s*([\d.]+)", body).group(1),
            "command": re.findall(r'"([^"]+)"', re.search(r"command:\s*\[(.*)\]", body).group(1)),
            "ports": re.findall(r'^\s+- "([^"]+:\d+)"\s*$', body, re.M),
            "volumes": re.findall(r"^\s+- (\S+:/data\S*)\s*$", merged, re.M),
            "healthcheck": "healthcheck:" in merged,
        }
    subnet = re.search(r"subnet:\s*([\d./]+)", "\n".join(blocks["networks"])).group(1)
    return {"services": services, "subnet": subnet}


def test_compose_config_validates() -> None:
    tool = compose_tool()
    if tool is None:
        pytest.skip("neither the docker compose plugin nor docker-compose is installed; compose file not validated")
    proc = subprocess.run([*tool, "-f", str(COMPOSE), "config", "--quiet"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr or proc.stdout


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    joined = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in joined.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def test_dockerfile_installs_no_train_extra_and_runs_as_non_root() -> None:
    instr = dockerfile_instructions()
    runs = " ".join(arg for word, arg in instr if word == "RUN")
    assert re.search(r"pip install [^&;]*\.(\s|$)", runs), "the project is installed with `pip install .`"
    assert "[train" not in runs and "torch" not in re.sub(r"import torch", "", runs), runs
    final = [i for i, (w, _) in enumerate(instr) if w == "FROM"][-1]
    stage = instr[final:]
    users = [arg for w, arg in stage if w == "USER"]
    assert users, "the runtime stage sets a USER"
    assert users[-1].split(":")[0] not in ("root", "0")
    assert any(w == "HEALTHCHECK" and "/health" in a for w, a in stage)
    assert ("ENTRYPOINT", '["daimon-node"]') in stage
    assert ("CMD", '["start", "--config", "/data/node.toml"]') in stage
    exposed = " ".join(a for w, a in stage if w == "EXPOSE")
    assert str(DOCKER_P2P_PORT) in exposed and str(DOCKER_RPC_PORT) in exposed
    base = stage[0][1]
    assert "python" in base.lower() or base.startswith("${PYTHON_IMAGE}")
    assert any(w == "ARG" and "python:3.11-slim" in a for w, a in instr)


def test_dockerignore_keeps_keys_and_venv_out() -> None:
    ignored = (ROOT / ".dockerignore").read_text().split()
    for entry in (".venv", ".git", "benchmarks/out"):
        assert entry in ignored


def test_prepare_only_docker_matches_compose(tmp_path: Path) -> None:
    compose = parse_compose(COMPOSE.read_text())
    assert compose["subnet"] == DOCKER_SUBNET
    subnet = ipaddress.ip_network(compose["subnet"])
    services = compose["services"]
    assert len(services) == 4
    out = tmp_path / "testnet-data"
    result = CliRunner().invoke(app, ["testnet", "--prepare-only", "--docker", "--nodes", "4", "--dir", str(out)])
    assert result.exit_code == 0, result.output
    summary = tomllib.loads((out / "testnet.toml").read_text())
    hosts = summary["hosts"]
    assert summary["mount"] == DOCKER_MOUNT

    by_config = {}
    for name, svc in services.items():
        cmd = svc["command"]
        config = cmd[cmd.index("--config") + 1]
        assert config.startswith(DOCKER_MOUNT + "/")
        by_config[Path(config).name] = svc
        assert ipaddress.ip_address(svc["ip"]) in subnet
        assert any(v.endswith(":" + DOCKER_MOUNT) or v.endswith(f":{DOCKER_MOUNT}:rw") for v in svc["volumes"])
        assert any(p.endswith(f":{DOCKER_RPC_PORT}") for p in svc["ports"]), svc["ports"]
        assert svc["healthcheck"]
    host_ports = sorted(int(p.split(":")[-2]) for s in services.values() for p in s["ports"])
    assert host_ports == [8545, 8546, 8547, 8548]

    ip_of = {}
    for i in range(4):
        svc = by_config[f"node{i}.toml"]
        assert hosts[i] == svc["ip"], f"node{i}: testnet.toml says {hosts[i]}, compose {svc['ip']}"
        ip_of[i] = svc["ip"]
    peer_ids = {}
    for i in range(4):
        cfg = load_config(out / f"node{i}.toml")
        assert cfg.p2p.listen == f"/ip4/0.0.0.0/tcp/{DOCKER_P2P_PORT}"
        assert (cfg.rpc.host, cfg.rpc.port) == ("0.0.0.0", DOCKER_RPC_PORT)
        assert cfg.node.data_dir == f"{DOCKER_MOUNT}/node{i}"
        assert (out / f"node{i}" / "node_key").exists()
        for path in [cfg.roles.contributor.problem_dir, *cfg.roles.improver.models]:
            if path:
                assert path.startswith(DOCKER_MOUNT + "/")
                assert (out / Path(path).relative_to(DOCKER_MOUNT)).exists(), path
        for addr in cfg.p2p.bootstrap:
            m = re.fullmatch(r"/ip4/([\d.]+)/tcp/(\d+)/p2p/(\w+)", addr)
            assert m, addr
            ip, port, peer = m.group(1), int(m.group(2)), m.group(3)
            assert ip in ip_of.values() and ip != ip_of[i]
            assert port == DOCKER_P2P_PORT
            peer_ids.setdefault(ip, set()).add(peer)
    # Every node but the first is dialled by a later one, always under one peer id.
    assert sorted(peer_ids) == sorted(ip_of[i] for i in range(3))
    assert all(len(ids) == 1 for ids in peer_ids.values())
    assert load_config(out / "node0.toml").roles.contributor.problem_dir == f"{DOCKER_MOUNT}/problem"


def test_prepare_only_local_keeps_loopback(tmp_path: Path) -> None:
    out = tmp_path / "local"
    result = CliRunner().invoke(app, ["testnet", "--prepare-only", "--nodes", "3", "--dir", str(out),
                                      "--base-port", "47500"])
    assert result.exit_code == 0, result.output
    for i in range(3):
        cfg = load_config(out / f"node{i}.toml")
        assert cfg.p2p.listen == f"/ip4/127.0.0.1/tcp/{47500 + i}"
        assert (cfg.rpc.host, cfg.rpc.port) == ("127.0.0.1", 47600 + i)
        assert cfg.node.data_dir == str(out / f"node{i}")
        assert all(a.startswith("/ip4/127.0.0.1/") for a in cfg.p2p.bootstrap)
    assert "hosts" not in tomllib.loads((out / "testnet.toml").read_text())


def test_docker_flag_needs_prepare_only(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["testnet", "--docker", "--dir", str(tmp_path / "x")])
    assert result.exit_code != 0
    assert not (tmp_path / "x" / "testnet.toml").exists()
