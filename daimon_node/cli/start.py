"""``daimon-node start``: run the daemon until SIGINT/SIGTERM."""

from __future__ import annotations

import logging
import signal
from pathlib import Path
from typing import Optional

import trio
import typer

from daimon_node.config import NodeConfig, load_config
from daimon_node.errors import DaimonError


def configure_logging(level: str, log_file: Path | None = None) -> None:
    """The node's log: stderr, or ``log_file``. libp2p's own records go there too.

    Importing libp2p detaches its loggers (``propagate = False``, no handler unless
    ``LIBP2P_DEBUG`` is set), so its warnings fell through to Python's last-resort
    handler on stderr, which must stay free for the node's one-line errors.
    """
    import libp2p  # noqa: F401  (its import-time logging setup must run before ours)

    libp2p_logger = logging.getLogger("libp2p")
    if not libp2p_logger.handlers:
        libp2p_logger.propagate = True
    handlers: list[logging.Handler] = [logging.StreamHandler()]
    if log_file is not None:
        handlers = [logging.FileHandler(log_file)]
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        handlers=handlers,
        force=True,
    )
    for noisy in ("libp2p", "multiaddr", "async_service"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    logging.getLogger(LIBP2P_TCP_LOGGER).addFilter(demote_failed_dial)


# py-libp2p 0.8.1 logs every failed outgoing TCP dial at ERROR. On a peer-to-peer network that is
# routine (the peer is down or not up yet) and the node re-dials with a backoff, so an operator
# reading ERROR would chase nothing: such records are kept, as warnings.
LIBP2P_TCP_LOGGER = "libp2p.transport.tcp.tcp"
FAILED_DIAL_PREFIX = "Failed to open TCP stream"


def demote_failed_dial(record: logging.LogRecord) -> bool:
    if record.levelno == logging.ERROR and str(record.msg).startswith(FAILED_DIAL_PREFIX):
        record.levelno, record.levelname = logging.WARNING, "WARNING"
    return True


async def run_until_signal(config: NodeConfig) -> None:
    """Run the node; a first SIGINT/SIGTERM stops it cleanly (stores closed, sandbox ended)."""
    from daimon_node.daemon.node import Node

    node = Node(config)
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            await nursery.start(node.run)

            async def stop_on_signal() -> None:
                async for sig in signals:
                    logging.getLogger(__name__).info("received %s; shutting down", signal.Signals(sig).name)
                    nursery.cancel_scope.cancel()
                    return

            nursery.start_soon(stop_on_signal)


def start(
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="TOML config (see configs/)."),
    data_dir: Optional[Path] = typer.Option(None, "--dir", "-d", help="Override node.data_dir."),
    listen: Optional[str] = typer.Option(None, help="Override p2p.listen (a multiaddr)."),
    bootstrap: Optional[list[str]] = typer.Option(None, help="Add a bootstrap peer multiaddr (repeatable)."),
    dht: Optional[bool] = typer.Option(None, "--dht/--no-dht", help="Override p2p.dht (Kademlia peer and content discovery)."),
    mdns: Optional[bool] = typer.Option(None, "--mdns/--no-mdns", help="Override p2p.mdns (find LAN peers by multicast)."),
    rpc_port: Optional[int] = typer.Option(None, help="Override rpc.port (0 = any free port)."),
    committer: Optional[bool] = typer.Option(None, "--committer/--no-committer", help="Override roles.committer.enabled."),
    validator: Optional[bool] = typer.Option(None, "--validator/--no-validator", help="Override roles.validator.enabled."),
    log_level: Optional[str] = typer.Option(None, help="Override node.log_level."),
    log_file: Optional[Path] = typer.Option(None, help="Write logs to this file instead of stderr."),
) -> None:
    """Start the node daemon: p2p, chain sync, enabled roles and JSON-RPC."""
    overrides = {
        "node.data_dir": str(data_dir) if data_dir else None,
        "p2p.listen": listen,
        "p2p.bootstrap": list(bootstrap) if bootstrap else None,
        "p2p.dht": dht,
        "p2p.mdns": mdns,
        "rpc.port": rpc_port,
        "roles.committer.enabled": committer,
        "roles.validator.enabled": validator,
        "node.log_level": log_level,
    }
    run_node(load_config(config, overrides), log_file)


def run_node(cfg: NodeConfig, log_file: Path | None = None) -> None:
    """Configure logging and run the node until a signal; a user error inside the
    nursery arrives wrapped in an exception group and is surfaced as one line (the
    CLI prints it on stderr; with a log file, it is the log's last line too)."""
    configure_logging(cfg.node.log_level, log_file)
    try:
        try:
            trio.run(run_until_signal, cfg)
        except BaseExceptionGroup as group:
            raise first_user_error(group) from None
    except DaimonError as err:
        if log_file is not None:
            logging.raiseExceptions = False  # a log file on the full disk cannot take it: stderr has it
            logging.getLogger(__name__).critical("%s", err)
        raise


def first_user_error(group: BaseExceptionGroup[BaseException]) -> DaimonError:
    """The first ``DaimonError`` in ``group``; the group itself (a bug) when it holds none."""
    matched, _ = group.split(DaimonError)
    if matched is None:
        raise group
    first: BaseException = matched
    while isinstance(first, BaseExceptionGroup):
        first = first.exceptions[0]
    assert isinstance(first, DaimonError)
    return first
