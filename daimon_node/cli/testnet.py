"""``daimon-node testnet``: N node processes on 127.0.0.1 with live progress.

``--prepare-only`` writes the directory and exits; with ``--docker`` the configs
address the nodes by the static IPs of ``docker-compose.yml``'s network and name
paths under ``/data`` (where compose mounts the directory):

    daimon-node testnet --prepare-only --docker --nodes 4 --dir testnet-data
    docker compose up
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.live import Live

from daimon_node.harness.progress import poll_node, progress_table
from daimon_node.harness.testnet import (
    NodeDied,
    Testnet,
    TestnetPlan,
    check_ports_free,
    free_base_port,
    prepare_testnet,
    raise_on_sigterm,
    supervise,
    local_testnet_ports,
)

# docker-compose.yml's network: node i runs at DOCKER_SUBNET_PREFIX + str(DOCKER_FIRST_HOST + i),
# with the prepared directory mounted at DOCKER_MOUNT, p2p on DOCKER_P2P_PORT, RPC on DOCKER_RPC_PORT.
DOCKER_SUBNET = "172.29.0.0/24"
DOCKER_SUBNET_PREFIX = "172.29.0."
DOCKER_FIRST_HOST = 11
DOCKER_MOUNT = "/data"
DOCKER_P2P_PORT = 4001
DOCKER_RPC_PORT = 8545


def docker_hosts(nodes: int) -> list[str]:
    """The static IPs of ``nodes`` containers in docker-compose.yml's network."""
    if DOCKER_FIRST_HOST + nodes > 255:
        raise typer.BadParameter(f"{nodes} nodes do not fit in {DOCKER_SUBNET}")
    return [f"{DOCKER_SUBNET_PREFIX}{DOCKER_FIRST_HOST + i}" for i in range(nodes)]


def testnet(
    nodes: int = typer.Option(4, "--nodes", "-n", min=2, max=64, help="How many node processes."),
    data_dir: Path = typer.Option(Path(".daimon/testnet"), "--dir", "-d", help="Testnet directory (must be new)."),
    t_p: int = typer.Option(20, help="Problem-definition period T_p, seconds."),
    t_b: int = typer.Option(8, help="Competition period T_b, seconds."),
    grace: int = typer.Option(4, help="Seconds after a period ends before out-of-turn commits."),
    base_port: Optional[int] = typer.Option(
        None, help="First p2p port; RPC ports start at base+100 (default: a free block picked at random; "
                   "with --docker, every node's p2p port, default 4001)."),
    duration: float = typer.Option(3600.0, help="Stop every node after this many seconds (0 = until Ctrl-C)."),
    until_height: int = typer.Option(0, help="Stop once every node reaches this height (0 = never)."),
    holdout: float = typer.Option(0.0, help="Fraction of digits kept as a sealed holdout (0 = none)."),
    start_delay: int = typer.Option(0, help="Seconds from now to the problem's t0 (0 = 10 + the number of nodes, "
                                    "time for every node to come up before T_p counts)."),
    prepare_only: bool = typer.Option(False, "--prepare-only", help="Write the directory, start nothing."),
    docker: bool = typer.Option(
        False, "--docker", help=f"Configs for docker-compose.yml: static IPs in {DOCKER_SUBNET}, paths under {DOCKER_MOUNT}."),
) -> None:
    """Start a local multi-node testnet (a digits problem, improvers, validators, rotating committers)."""
    console = Console()
    if docker and not prepare_only:
        raise typer.BadParameter("--docker only prepares a directory for docker compose; add --prepare-only")
    start_delay = start_delay or 10 + nodes
    console.print(f"preparing {nodes} nodes in {data_dir} (keys, problem, example models, configs) ...")
    if docker:
        plan = prepare_testnet(data_dir, nodes, t_p=t_p, t_b=t_b, grace=grace,
                               base_port=DOCKER_P2P_PORT if base_port is None else base_port,
                               start_delay=start_delay, holdout_fraction=holdout,
                               hosts=docker_hosts(nodes), mount=DOCKER_MOUNT, rpc_port=DOCKER_RPC_PORT)
    else:
        if base_port is not None and not prepare_only:  # the ports are bound now, not when prepared
            check_ports_free(local_testnet_ports(base_port, nodes))  # one line naming a taken port, before any work
        plan = prepare_testnet(data_dir, nodes, t_p=t_p, t_b=t_b, grace=grace,
                               base_port=free_base_port(nodes) if base_port is None else base_port,
                               start_delay=start_delay, holdout_fraction=holdout)
    if prepare_only:
        console.print(f"wrote {len(plan.configs)} node configs to {data_dir} (problem t0 in {start_delay} s)")
        if docker:
            console.print(f"next: DAIMON_DATA={data_dir} docker compose up  (docker-compose.yml runs 4 nodes;"
                          f" the containers run as uid ${{DAIMON_UID:-1000}}, which must own {data_dir})")
        return
    run_testnet(plan, console, duration=duration, until_height=until_height)


def run_testnet(plan: TestnetPlan, console: Console, *, duration: float, until_height: int) -> None:
    """Run the nodes with live progress until ``until_height``, ``duration`` or a signal; a node
    that dies stops the others and surfaces as ``NodeDied`` (exit 1 with its last log lines)."""
    raise_on_sigterm()
    net = Testnet(plan)
    net.start()
    limit = f"stops by itself after {duration:.0f} s" if duration > 0 else "runs until Ctrl-C"
    console.print(f"started; logs in {plan.directory}/node<i>/node.log; Ctrl-C stops every node; {limit}")
    interrupted = False
    try:
        with Live(console=console, refresh_per_second=2) as live:

            def tick(elapsed: float) -> bool:
                views = [poll_node(p, plan.chain_id) for p in plan.rpc_ports]
                live.update(progress_table(plan, views, elapsed))
                return bool(until_height) and all(v.get("height", -1) >= until_height for v in views)

            supervise(net, tick, limit=duration)
    except KeyboardInterrupt:
        interrupted = True
        console.print("stopping ...")
    except NodeDied:
        console.print("a node died; stopping the others ...")
        raise
    finally:
        net.stop()
        console.print("all nodes stopped")
    if interrupted:
        raise typer.Exit(130)
