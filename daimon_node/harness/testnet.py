"""A local multi-node testnet on 127.0.0.1: keys, a genesis problem, configs, processes.

``prepare_testnet`` writes everything a testnet needs into one directory:
``node<i>/`` data dirs with keys, a digits problem (node 0 contributes it; the
first three nodes commit in turn; every node gets genesis funds), example
models for the improvers, and one TOML config per node whose bootstrap list
names three other nodes (py-libp2p's gossip needs several peers per node, not
a hub). ``Testnet`` starts the nodes as separate OS processes in one process
group of their own and stops them with SIGTERM (then SIGKILL after a bound);
``check`` notices a node that died and raises ``NodeDied`` with its last log
lines; on Linux a node also gets SIGTERM if the process that started it dies,
so a killed demo leaves no node behind. ``free_base_port`` finds a block of
free ports and ``check_ports_free`` refuses a taken one in one line.

For container networks (``docker-compose.yml``) pass ``hosts`` (one static IP
per node) and ``mount`` (where the prepared directory is mounted inside every
container, e.g. ``/data``): nodes then listen on 0.0.0.0, bootstrap to the
other nodes' IPs, every node uses the same p2p port (``base_port``) and RPC
port (``rpc_port``), and every path in a config is under ``mount``.
"""

from __future__ import annotations

import ctypes
import os
import random
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Callable

import tomli_w

from chain.crypto import KeyPair

from daimon_node.errors import DaimonError
from daimon_node.keystore import init_data_dir

if TYPE_CHECKING:
    from daimon_node.proofs.problem_kit import CreatedProblem
    from daimon_node.proofs.splits import Dataset


class TestnetError(DaimonError):
    """The testnet directory or its processes are not usable."""

    __test__ = False


class PortInUse(TestnetError):
    """A port the testnet needs is held by another process."""

    __test__ = False

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        super().__init__(f"port {port} on {host} is in use by another process; "
                         "choose another --base-port, or leave it out to pick free ports")


class NodeDied(TestnetError):
    """A node process exited while the testnet was running."""

    __test__ = False

    def __init__(self, index: int, returncode: int, tail: str) -> None:
        self.index, self.returncode, self.tail = index, returncode, tail
        super().__init__(f"node {index} exited with code {returncode}; the last lines of its log:\n{tail}")


def local_testnet_ports(base_port: int, nodes: int) -> list[int]:
    """Every port a local testnet of ``nodes`` nodes uses: p2p ``base + i``, RPC ``base + 100 + i``."""
    return [base_port + i for i in range(nodes)] + [base_port + 100 + i for i in range(nodes)]


def check_ports_free(ports: list[int], host: str = "127.0.0.1") -> None:
    """Raise ``PortInUse`` for the first of ``ports`` that cannot be bound now."""
    for port in ports:
        with socket.socket() as sock:
            try:
                sock.bind((host, port))
            except OSError:
                raise PortInUse(host, port) from None


def ephemeral_port_range() -> tuple[int, int]:
    """The ports the kernel hands out for outgoing connections (Linux; its default elsewhere)."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def free_base_port(nodes: int = 4, host: str = "127.0.0.1", tries: int = 100) -> int:
    """A random base port whose whole block (``local_testnet_ports``) is free now.

    Random, so two testnets started at once (or two test runs) do not race for the same
    ports; a port taken between this check and a node's start is caught by ``Testnet.check``.
    Below the kernel's ephemeral range: a node started late (a joiner) found its port taken by
    some process's outgoing connection, and with the DHT every node makes many.
    """
    low = ephemeral_port_range()[0]
    top = low - 200 if low >= 12000 else 60000
    for _ in range(tries):
        base = random.randrange(10000 if top < 60000 else 20000, top, 200)
        try:
            check_ports_free(local_testnet_ports(base, nodes), host)
        except PortInUse:
            continue
        return base
    raise TestnetError(f"no free block of {2 * nodes} ports on {host} after {tries} tries")


def _die_with_parent() -> None:
    """In the child before exec: ask Linux for SIGTERM when the parent dies (prctl PR_SET_PDEATHSIG)."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)


def log_tail(path: Path, lines: int = 12) -> str:
    """The last ``lines`` lines of a log file ('' when it does not exist)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 16384))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


@dataclass
class TestnetPlan:
    directory: Path
    configs: list[Path]
    keys: list[KeyPair]
    problem_dir: Path
    chain_id: bytes
    rpc_ports: list[int]
    p2p_ports: list[int]
    models: dict[str, Path] = field(default_factory=dict)

    __test__ = False


def _roles(i: int, n: int, models: dict[str, Path]) -> dict[str, object]:
    """Node 0 contributes; nodes 0-2 commit; nodes 1 and 2 improve (with the example models,
    when there are any); everyone validates."""
    improver_models: list[str] = []
    if models and i == 1:
        improver_models = [str(models["weak"])]
    elif models and i == 2:
        improver_models = [str(models["linear"])]
    if models and i == 1 and n == 2:
        improver_models = [str(models["weak"]), str(models["linear"])]
    return {
        "contributor": {"enabled": False, "problem_dir": ""},
        "improver": {"enabled": bool(improver_models), "models": improver_models, "chain": ""},
        "validator": {"enabled": True},
        "committer": {"enabled": i < 3},
    }


@dataclass(frozen=True)
class NetworkLayout:
    """Where each node listens and what paths its config names (see ``prepare_testnet``)."""

    directory: Path
    p2p_ports: list[int]
    rpc_ports: list[int]
    ips: list[str]
    bind: str
    mount: str | None

    def where(self, path: Path) -> str:
        """``path`` as the node will see it (under ``mount`` when given)."""
        if self.mount is None:
            return str(path)
        return str(PurePosixPath(self.mount) / Path(path).resolve().relative_to(self.directory.resolve()).as_posix())


def _layout(directory: Path, nodes: int, base_port: int, hosts: list[str] | None, mount: str | None,
            rpc_port: int) -> NetworkLayout:
    if hosts is None:
        return NetworkLayout(directory, [base_port + i for i in range(nodes)],
                             [base_port + 100 + i for i in range(nodes)], ["127.0.0.1"] * nodes, "127.0.0.1", mount)
    return NetworkLayout(directory, [base_port] * nodes, [rpc_port] * nodes, list(hosts), "0.0.0.0", mount)


def _write_node_configs(layout: NetworkLayout, keys: list[KeyPair], models: dict[str, Path],
                        problem_dir: Path, proposal: bytes, chain_id: bytes, bootstrap_peers: int = 3) -> list[Path]:
    """One TOML config per node, and the proposal in every node's data dir."""
    from p2p import peer_id_from_seed

    directory = layout.directory
    addrs = [f"/ip4/{ip}/tcp/{p}/p2p/{peer_id_from_seed(k.seed)}" for ip, p, k in zip(layout.ips, layout.p2p_ports, keys)]
    configs = []
    for i in range(len(keys)):
        # Dial the (up to) ``bootstrap_peers`` nodes started before: links are two-way, so every
        # node ends with several peers, and no pair dials each other at once (a simultaneous open).
        peers = [addrs[j] for j in range(max(0, i - bootstrap_peers), i)]
        roles = _roles(i, len(keys), {name: Path(layout.where(p)) for name, p in models.items()})
        if i == 0:
            roles["contributor"] = {"enabled": True, "problem_dir": layout.where(problem_dir)}
        cfg = {
            "node": {"data_dir": layout.where(directory / f"node{i}"), "log_level": "info"},
            "p2p": {"listen": f"/ip4/{layout.bind}/tcp/{layout.p2p_ports[i]}", "bootstrap": peers},
            "rpc": {"enabled": True, "host": layout.bind, "port": layout.rpc_ports[i]},
            "chain": {"follow": ["*"], "clock_drift_s": 2.0},
            "roles": roles,
        }
        path = directory / f"node{i}.toml"
        path.write_text(tomli_w.dumps(cfg))
        configs.append(path)
        # Every node knows the proposal from the start (gossip reaches only nodes already up).
        proposals = directory / f"node{i}" / "proposals"
        proposals.mkdir(parents=True, exist_ok=True)
        (proposals / f"{chain_id.hex()}.bin").write_bytes(proposal)
    return configs


def _example_models(directory: Path, dataset: "Dataset", holdout_fraction: float) -> dict[str, Path]:
    """The example digits models, trained on the split the problem will make (bundled digits only)."""
    from daimon_node.harness.examples import write_examples
    from daimon_node.proofs.splits import split_dataset
    from daimon_node.proofs.problem_params import ProblemOptions

    split = split_dataset(dataset, holdout_fraction=holdout_fraction, seed=ProblemOptions().seed)
    return write_examples(directory / "models", split.train_x, split.train_y, dataset.num_classes)


def prepare_testnet(
    directory: Path,
    nodes: int = 4,
    *,
    t_p: int = 20,
    t_b: int = 8,
    grace: int = 4,
    base_port: int = 47000,
    start_delay: int = 10,
    holdout_fraction: float = 0.0,
    seasons: int = 1,
    season_periods: int = 4,
    reveal_window: int = 2,
    unbonding_periods: int = 2,
    hosts: list[str] | None = None,
    mount: str | None = None,
    rpc_port: int = 8545,
    extra_accounts: tuple[bytes, ...] = (),
    committer_bond: int = 0,
    committer_delay: int = 2,
    committer_miss_limit: int = 0,
    data: Path | None = None,
    quorum_ppb: int | None = None,
    bootstrap_peers: int = 3,
) -> TestnetPlan:
    """Write keys, a genesis problem, example models and configs for ``nodes`` nodes.

    By default every node listens on 127.0.0.1 with its own ports (p2p ``base_port + i``,
    RPC ``base_port + 100 + i``). With ``hosts`` (node i reachable at ``hosts[i]``, e.g. a
    container's static IP) every node listens on 0.0.0.0 at p2p ``base_port`` and RPC
    ``rpc_port``; with ``mount``, the configs name paths under ``mount`` (the directory as
    a container sees it) instead of ``directory``. ``extra_accounts`` (addresses) get the same
    genesis funds as the nodes' keys: a test's own sender, whose nonces no node role shares.
    ``data`` (anything ``problem create --data`` reads) replaces the bundled digits; the
    example models are then not trained and no node's improver role has a model.
    Node i is given the addresses of the ``bootstrap_peers`` nodes before it (1 makes a line
    that only the DHT turns into a mesh).
    """
    from daimon_node.proofs.datasets import load_data
    from daimon_node.proofs.splits import load_dataset

    directory = _new_testnet_directory(Path(directory), nodes, hosts)
    keys = [init_data_dir(directory / f"node{i}", exist_ok=True) for i in range(nodes)]
    dataset = load_dataset("digits") if data is None else load_data(Path(data))
    # Train the example models first, so that t0 counts from when the testnet is ready.
    models = _example_models(directory, dataset, holdout_fraction) if data is None else {}
    created = _genesis_problem(
        directory, keys, dataset, extra_accounts, holdout_fraction=holdout_fraction, seasons=seasons,
        name="digits-testnet" if data is None else f"{dataset.name}-testnet", t_p=t_p, t_b=t_b, grace=grace,
        t0=int(time.time()) + start_delay, season_periods=season_periods, reveal_window=reveal_window,
        unbonding_periods=unbonding_periods, committer_bond=committer_bond, committer_delay=committer_delay,
        committer_miss_limit=committer_miss_limit, **({} if quorum_ppb is None else {"quorum_ppb": quorum_ppb}))
    if models and not _same_train_split(created.directory, dataset, holdout_fraction):
        raise TestnetError("the problem's training split differs from the one the example models used")
    layout = _layout(directory, nodes, base_port, hosts, mount, rpc_port)
    chain_id = created.problem.chain_id
    configs = _write_node_configs(layout, keys, models, created.directory, created.problem.proposal.encode(), chain_id,
                                  bootstrap_peers)
    _write_summary(layout, nodes, chain_id, hosts)
    return TestnetPlan(directory, configs, keys, created.directory, chain_id, layout.rpc_ports, layout.p2p_ports, models)


def _new_testnet_directory(directory: Path, nodes: int, hosts: list[str] | None) -> Path:
    """``directory``, created, once the arguments make a testnet and it holds none yet."""
    if nodes < 2:
        raise TestnetError("a testnet needs at least 2 nodes")
    if hosts is not None and len(hosts) != nodes:
        raise TestnetError(f"{len(hosts)} hosts given for {nodes} nodes")
    if (directory / "testnet.toml").exists():
        raise TestnetError(f"{directory} already holds a testnet; use another --dir or remove it")
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def _write_summary(layout: NetworkLayout, nodes: int, chain_id: bytes, hosts: list[str] | None) -> None:
    """``testnet.toml``: what the ``testnet`` command and docker-compose read back."""
    summary: dict[str, object] = {
        "nodes": nodes, "chain_id": chain_id.hex(), "rpc_ports": layout.rpc_ports, "p2p_ports": layout.p2p_ports,
    }
    if hosts is not None:
        summary["hosts"] = list(hosts)
    if layout.mount is not None:
        summary["mount"] = layout.mount
    (layout.directory / "testnet.toml").write_text(tomli_w.dumps(summary))


def _genesis_problem(directory: Path, keys: list[KeyPair], dataset: "Dataset", extra_accounts: tuple[bytes, ...], *,
                     holdout_fraction: float, seasons: int, **options: Any) -> "CreatedProblem":
    """The testnet's problem, contributed by node 0: the first three nodes commit, every node's
    key (and each of ``extra_accounts``) gets 1000 tokens; ``options`` are ``ProblemOptions``."""
    from daimon_node.proofs.problem_kit import create_problem
    from daimon_node.proofs.problem_params import ProblemOptions

    opts = ProblemOptions(
        committers=tuple(k.public_key for k in keys[: min(3, len(keys))]),
        genesis=tuple((a, 1000 * 10**18) for a in [*(k.address_bytes for k in keys), *extra_accounts]),
        max_infer_ms=30_000, **options)
    return create_problem(directory / "problem", keys[0], opts=opts, dataset=dataset,
                          holdout_fraction=holdout_fraction, seasons=seasons)


def _same_train_split(problem_dir: Path, dataset: "Dataset", holdout_fraction: float) -> bool:
    """Whether the problem's public training part is the split the example models were trained on."""
    from daimon_node.proofs.problem_kit import load_train_split
    from daimon_node.proofs.splits import split_dataset
    from daimon_node.proofs.problem_params import ProblemOptions

    split = split_dataset(dataset, holdout_fraction=holdout_fraction, seed=ProblemOptions().seed)
    x_train, y_train = load_train_split(problem_dir)
    return x_train.shape == split.train_x.shape and bool((y_train == split.train_y).all())


@dataclass
class Testnet:
    """The node processes of a prepared testnet."""

    plan: TestnetPlan
    procs: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)

    __test__ = False

    def start_node(self, i: int) -> None:
        log = self.log_path(i)
        cmd = [sys.executable, "-m", "daimon_node.cli", "start", "--config", str(self.plan.configs[i]),
               "--log-file", str(log)]
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        group = self._group()
        with open(log.with_suffix(".err"), "ab") as err:
            self.procs[i] = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, env=env,
                                             process_group=group, preexec_fn=_die_with_parent)

    def _group(self) -> int:
        """The nodes' process group: the first live node's (0 makes the first node lead a new one)."""
        for proc in self.procs.values():
            if proc.poll() is None:
                try:
                    return os.getpgid(proc.pid)
                except ProcessLookupError:
                    continue
        return 0

    def log_path(self, i: int) -> Path:
        return self.plan.directory / f"node{i}" / "node.log"

    def start(self) -> None:
        for i in range(len(self.plan.configs)):
            self.start_node(i)

    def check(self) -> None:
        """Raise ``NodeDied`` if a node this testnet runs has exited (one it was told to stop is gone
        from ``procs``)."""
        for i, proc in sorted(self.procs.items()):
            code = proc.poll()
            if code is not None:
                log = self.log_path(i)
                tail = "\n".join(t for t in (log_tail(log.with_suffix(".err")), log_tail(log, 6)) if t)
                raise NodeDied(i, code, tail or "(empty)")

    def stop_node(self, i: int, *, kill: bool = False, timeout: float = 20.0) -> None:
        proc = self.procs.pop(i, None)
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=timeout)

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM every node at once, then wait (SIGKILL what outlives ``timeout``); last, SIGKILL
        whatever is left in the nodes' process group (a node's sandbox workers)."""
        group = self._group()
        procs = [p for p in self.procs.values() if p.poll() is None]
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for proc in procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=timeout)
        self.procs.clear()
        if group > 0:
            try:
                os.killpg(group, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass

    def alive(self) -> list[int]:
        return [i for i, p in self.procs.items() if p.poll() is None]


def raise_on_sigterm() -> None:
    """Make SIGTERM (and SIGHUP) raise ``KeyboardInterrupt`` in the main thread, as SIGINT does,
    so that a supervisor's ``finally`` stops its nodes instead of leaving them running."""

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, handler)


def supervise(net: Testnet, tick: Callable[[float], bool], *, limit: float, interval: float = 1.0) -> bool:
    """Call ``tick(elapsed)`` every ``interval`` seconds until it returns True (then True) or
    ``limit`` seconds have passed (then False; ``limit <= 0`` means no limit). A node that dies
    raises ``NodeDied`` within one interval plus one tick."""
    started = time.monotonic()
    while True:
        net.check()
        elapsed = time.monotonic() - started
        if tick(elapsed):
            return True
        if 0 < limit <= elapsed:
            return False
        net.check()
        time.sleep(interval)
