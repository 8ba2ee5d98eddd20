"""One logging set-up for every Sonae process.

Every line passes through :func:`infra.redact.mask_passwords` (the message and any
traceback), so a URL with a password that reaches a log — a driver's error text, a
setting quoted in a warning — is written with the password masked.
"""

from __future__ import annotations

import logging
import sys

from infra.redact import mask_passwords
from infra.settings import Settings

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

CHATTY_LOGGERS = ("aiokafka.consumer.group_coordinator", "aiokafka.consumer.subscription_state")
"""Loggers that write every group join and partition assignment at INFO (one line names
every partition of every topic); below DEBUG they write warnings only, so the stack's
console reads as the services' own decisions."""


class MaskingFormatter(logging.Formatter):
    """A formatter whose output never carries a URL's password."""

    def format(self, record: logging.LogRecord) -> str:
        """The formatted line (traceback included), passwords masked."""
        return mask_passwords(super().format(record))


def configure_logging(settings: Settings) -> None:
    """Log to stderr at ``SONAE_LOG_LEVEL``; a no-op when logging is already configured."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(MaskingFormatter(FORMAT))
    logging.basicConfig(level=settings.log_level, handlers=[handler])
    if logging.getLevelName(settings.log_level) > logging.DEBUG:
        for name in CHATTY_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)
