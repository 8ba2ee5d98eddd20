"""One logging set-up for every Sonae process."""

from __future__ import annotations

import logging
import sys

from infra.settings import Settings

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_logging(settings: Settings) -> None:
    """Log to stderr at ``SONAE_LOG_LEVEL``; a no-op when logging is already configured."""
    logging.basicConfig(level=settings.log_level, format=FORMAT, stream=sys.stderr)
