"""Wiring of the evacuation decision process: settings in, faust worker run until SIGTERM.

``main(settings)`` is the registered entry point (``sonae service run
evacuation``, ``ServiceSpec("evacuation", "services.evacuation.main:main", ...)``).
It loads the region pack and its rules first, so a bad ``rules.toml`` stops the
process at once with the file and field named, makes sure the catalogue's topics
exist (faust creates only its own internal topics), then runs the faust worker
in this process without faust's web server. mode's worker handles SIGTERM and
SIGINT: it stops the agents, commits, leaves the group and exits.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Final

import faust

from infra.settings import Settings
from infra.topics import ensure_topics
from schemas.region import RegionPackError
from services.common.runtime import tune_gc
from services.evacuation.app import app_id, build_app
from services.evacuation.config import load_config

__all__ = ["EvacuationStartupError", "main"]

log = logging.getLogger(__name__)

# faust, mode and aiokafka log every rebalance and commit at INFO; an operator
# reads this service's own decisions there.
_QUIET_LOGGERS: Final = ("faust", "mode", "aiokafka", "infra.kafka.compat")


class EvacuationStartupError(RuntimeError):
    """The decision service cannot start; the message says what to fix."""


def main(settings: Settings) -> None:
    """Run the evacuation decision worker until SIGTERM/SIGINT (blocking)."""
    try:
        config = load_config(settings.region)
    except RegionPackError as e:
        raise EvacuationStartupError(f"cannot load the decision rules of region pack "
                                     f"{settings.region!r} (SONAE_REGION): {e}") from None
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    app = build_app(settings, config)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        loop.run_until_complete(ensure_topics(settings))
    except BaseException:
        loop.close()
        raise
    worker = faust.Worker(app, loop=loop, loglevel=settings.log_level, quiet=True,
                          redirect_stdouts=False, override_logging=False)
    tune_gc()  # as run_service does for the asyncio services
    worker.spinner = None  # output goes to the supervisor's log, not a terminal
    for name in _QUIET_LOGGERS:
        logging.getLogger(name).setLevel(max(logging.WARNING, logging.getLogger().level))
    log.info("evacuation decision starting: app %s, region %s, namespace %r",
             app_id(settings.namespace), config.region_id, settings.namespace or "live")
    try:
        worker.execute_from_commandline()  # returns only by SystemExit
    except SystemExit as exc:
        if exc.code not in (None, 0):
            raise
