"""The logging set-up: the client library's per-rebalance chatter stays out of the console."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from infra.logs import CHATTY_LOGGERS, configure_logging
from infra.settings import load_settings


@pytest.fixture(autouse=True)
def _restore_levels() -> Iterator[None]:
    names = ("", *CHATTY_LOGGERS)  # "" is the root logger
    levels = {name: logging.getLogger(name).level for name in names}
    yield
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


@pytest.mark.parametrize("level", ["INFO", "WARNING"])
def test_group_joins_and_assignments_are_warnings_only_below_debug(level: str) -> None:
    for name in CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.NOTSET)
    configure_logging(load_settings(development=True, log_level=level))
    for name in CHATTY_LOGGERS:
        assert not logging.getLogger(name).isEnabledFor(logging.INFO), name
        assert logging.getLogger(name).isEnabledFor(logging.WARNING), name


def test_debug_keeps_every_line() -> None:
    for name in CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.NOTSET)
    configure_logging(load_settings(development=True, log_level="DEBUG"))
    logging.getLogger().setLevel(logging.DEBUG)
    for name in CHATTY_LOGGERS:
        assert logging.getLogger(name).isEnabledFor(logging.INFO), name
