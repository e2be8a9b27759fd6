"""The node's log: a routine failed dial from py-libp2p is a warning, other libp2p errors stay errors."""

from __future__ import annotations

import logging

from daimon_node.cli.start import FAILED_DIAL_PREFIX, LIBP2P_TCP_LOGGER, demote_failed_dial


def record(msg: str, level: int = logging.ERROR) -> logging.LogRecord:
    return logging.LogRecord(LIBP2P_TCP_LOGGER, level, __file__, 1, msg, ("all attempts failed",), None)


def test_failed_dial_is_demoted_to_a_warning() -> None:
    dial = record(FAILED_DIAL_PREFIX + ": %s")
    assert demote_failed_dial(dial) is True  # kept, not dropped
    assert (dial.levelno, dial.levelname) == (logging.WARNING, "WARNING")


def test_other_libp2p_errors_stay_errors() -> None:
    crash = record("listener crashed: %s")
    assert demote_failed_dial(crash) is True
    assert (crash.levelno, crash.levelname) == (logging.ERROR, "ERROR")
    info = record(FAILED_DIAL_PREFIX + ": %s", logging.INFO)
    demote_failed_dial(info)
    assert info.levelno == logging.INFO


def test_configure_logging_installs_the_filter(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from daimon_node.cli.start import configure_logging

    tcp = logging.getLogger(LIBP2P_TCP_LOGGER)
    try:
        configure_logging("info", tmp_path / "node.log")
        assert demote_failed_dial in tcp.filters
    finally:
        tcp.removeFilter(demote_failed_dial)
        logging.basicConfig(force=True, handlers=[logging.NullHandler()])
