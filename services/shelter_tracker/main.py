"""Wiring of the shelter tracker process: settings in, faust worker run until SIGTERM.

``main(settings)`` is the entry point ``sonae service run shelter-tracker``
calls. It builds the tracker (which loads and checks the region pack) and hands
its app to :func:`services.common.faust_worker.run_faust_worker` (topics,
worker without faust's web server, SIGTERM).
"""

from __future__ import annotations

import logging
from typing import Final

from infra.settings import Settings
from services.common.faust_worker import run_faust_worker
from services.shelter_tracker.app import ShelterTracker

__all__ = ["main"]

log = logging.getLogger(__name__)

# faust, mode and aiokafka log every start, rebalance and commit at INFO; the
# tracker's own decisions are what an operator wants to read at INFO. mode logs
# a service under its class's module, so the Kafka layer's app and consumer log
# as infra.kafka.compat, and the table manager and recovery as infra.kafka.faust_recovery.
_CHATTY: Final = ("faust", "mode", "aiokafka", "infra.kafka.compat",
                  "infra.kafka.faust_recovery")


def main(settings: Settings) -> None:
    """Run the shelter tracker until SIGTERM/SIGINT (blocking); exits non-zero on failure."""
    tracker = ShelterTracker(settings)  # loads and checks the region pack first
    run_faust_worker(
        tracker.app, settings, service="shelter-tracker", quiet_loggers=_CHATTY,
        # At DEBUG the libraries' INFO lines (rebalances, recovery) are wanted too.
        quiet_level=logging.INFO if settings.log_level == "DEBUG" else logging.WARNING,
        announce=lambda: log.info("shelter tracker starting (app %s, namespace %r)",
                                  tracker.app.conf.id, settings.namespace or "live"),
    )
