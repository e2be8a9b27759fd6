"""The node's log: libp2p's records land in it, and a routine failed dial is not an ERROR."""

from __future__ import annotations

import logging
from pathlib import Path

from daimon_node.cli_start import LIBP2P_TCP_LOGGER, configure_logging


def test_failed_dial_is_logged_as_a_warning_and_other_errors_stay(tmp_path: Path) -> None:
    log = tmp_path / "node.log"
    configure_logging("info", log)
    try:
        tcp = logging.getLogger(LIBP2P_TCP_LOGGER)
        tcp.error("Failed to open TCP stream: %s", "all attempts to connect to 127.0.0.1:1 failed")
        tcp.error("listener crashed")
        for handler in logging.getLogger().handlers:
            handler.flush()
        lines = log.read_text().splitlines()
    finally:
        logging.getLogger(LIBP2P_TCP_LOGGER).filters.clear()
        logging.basicConfig(force=True, handlers=[logging.NullHandler()])
    dial = next(line for line in lines if "Failed to open TCP stream" in line)
    assert " WARNING libp2p.transport.tcp.tcp: " in dial
    assert any(" ERROR libp2p.transport.tcp.tcp: listener crashed" in line for line in lines)
