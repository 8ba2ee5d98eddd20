"""Wiring of the evacuation decision process: settings in, faust worker run until SIGTERM.

``main(settings)`` is the registered entry point (``sonae service run
evacuation``, ``ServiceSpec("evacuation", "services.evacuation.main:main", ...)``).
It loads the region pack and its rules first, so a bad ``rules.toml`` stops the
process at once with the file and field named, then hands the app to
:func:`services.common.faust_worker.run_faust_worker` (topics, worker, SIGTERM).
"""

from __future__ import annotations

import logging
from typing import Final

from infra.settings import Settings
from schemas.region import RegionPackError
from services.common.faust_worker import run_faust_worker
from services.evacuation.app import app_id, build_app
from services.evacuation.config import load_config
from services.evacuation.errors import EvacuationStartupError

__all__ = ["main"]

log = logging.getLogger(__name__)

# faust, mode and aiokafka log every rebalance and commit at INFO; an operator
# reads this service's own decisions there.
_QUIET_LOGGERS: Final = ("faust", "mode", "aiokafka", "infra.kafka.compat")


def main(settings: Settings) -> None:
    """Run the evacuation decision worker until SIGTERM/SIGINT (blocking)."""
    try:
        config = load_config(settings.region)
    except RegionPackError as e:
        raise EvacuationStartupError(f"cannot load the decision rules of region pack "
                                     f"{settings.region!r} (SONAE_REGION): {e}") from None
    app = build_app(settings, config)
    run_faust_worker(
        app, settings, service="evacuation", quiet_loggers=_QUIET_LOGGERS,
        quiet_level=max(logging.WARNING, logging.getLogger().level),
        announce=lambda: log.info(
            "evacuation decision starting: app %s, region %s, namespace %r",
            app_id(settings.namespace), config.region_id, settings.namespace or "live"),
    )
