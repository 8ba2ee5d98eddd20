"""Wiring of the shelter tracker process: settings in, faust worker run until SIGTERM.

``main(settings)`` is the entry point ``sonae service run shelter-tracker``
calls. It runs the faust worker in this process, without faust's web server
(the embedded broker profile never needs it, and two workers on one host would
fight over its port), after making sure the catalogue's topics exist.
"""

from __future__ import annotations

import asyncio
import logging

import faust

from infra.settings import Settings
from infra.topics import ensure_topics
from services.common.runtime import tune_gc
from services.shelter_tracker.app import ShelterTracker

__all__ = ["main"]

log = logging.getLogger(__name__)

# faust, mode and aiokafka log every start, rebalance and commit at INFO; the
# tracker's own decisions are what an operator wants to read at INFO. mode logs
# a service under its class's module, so the Kafka layer's app and consumer log
# as infra.kafka.compat, and the table manager and recovery as infra.kafka.faust_recovery.
_CHATTY = ("faust", "mode", "aiokafka", "infra.kafka.compat",
           "infra.kafka.faust_recovery")


def main(settings: Settings) -> None:
    """Run the shelter tracker until SIGTERM/SIGINT (blocking); exits non-zero on failure."""
    tracker = ShelterTracker(settings)  # loads and checks the region pack first
    settings.data_dir.mkdir(parents=True, exist_ok=True)  # faust makes only its own dir
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    # The source topic must exist before faust subscribes (faust creates only its
    # internal topics and changelogs).
    loop.run_until_complete(ensure_topics(settings))
    worker = faust.Worker(
        tracker.app, loop=loop, loglevel=settings.log_level, quiet=True,
        redirect_stdouts=False, override_logging=False,
    )
    tune_gc()  # as run_service does for the asyncio services
    worker.spinner = None  # a terminal spinner; the supervisor's log is not a terminal
    # At DEBUG the libraries' INFO lines (rebalances, recovery) are wanted too.
    chatty_level = logging.INFO if settings.log_level == "DEBUG" else logging.WARNING
    for name in _CHATTY:
        logging.getLogger(name).setLevel(chatty_level)
    log.info("shelter tracker starting (app %s, namespace %r)", tracker.app.conf.id,
             settings.namespace or "live")
    try:
        # mode's Worker installs the SIGTERM/SIGINT handlers, stops the app (commit,
        # leave the group) and then raises SystemExit.
        worker.execute_from_commandline()
    except SystemExit as exc:
        if exc.code not in (None, 0):
            raise
