"""Running a faust app as a service process: the start-up both faust services share.

:func:`run_faust_worker` makes sure the catalogue's topics exist (faust creates
only its own internal topics and changelogs, and a source topic must exist
before it subscribes), then runs the app's faust worker in this process without
faust's web server (the embedded broker profile never needs it, and two workers
on one host would fight over its port). mode's worker installs the SIGTERM and
SIGINT handlers: it stops the agents, commits, leaves the group and exits.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable

import faust

from infra.health import beacon_path, write_beacon
from infra.kafka.membership import faust_membership
from infra.settings import Settings
from infra.topics import ensure_topics
from services.common.runtime import tune_gc

__all__ = ["run_faust_worker"]


def run_faust_worker(
    app: faust.App,
    settings: Settings,
    *,
    quiet_loggers: Iterable[str],
    quiet_level: int,
    announce: Callable[[], None],
    service: str,
) -> None:
    """Run ``app``'s worker until SIGTERM/SIGINT (blocking); exits non-zero on failure.

    ``quiet_loggers`` (the libraries that log every rebalance and commit at INFO)
    are set to ``quiet_level``, so the service's own decisions are what an
    operator reads; ``announce`` logs the service's start line. Every second a
    timer writes the process's health beacon (:mod:`infra.health`) under the name
    ``service``: in its group, partitions assigned, not rebalancing.
    """
    settings.data_dir.mkdir(parents=True, exist_ok=True)  # faust makes only its own dir
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        loop.run_until_complete(ensure_topics(settings))
    except BaseException:
        loop.close()
        raise
    beacon = beacon_path(settings.data_dir, service, settings.namespace)

    async def health_beacon() -> None:
        serving, detail = faust_membership(app)
        write_beacon(beacon, serving=serving, detail=detail)

    app.timer(1.0, name=f"{service}-health-beacon")(health_beacon)
    worker = faust.Worker(app, loop=loop, loglevel=settings.log_level, quiet=True,
                          redirect_stdouts=False, override_logging=False)
    tune_gc()  # as run_service does for the asyncio services
    worker.spinner = None  # a terminal spinner; the supervisor's log is not a terminal
    for name in quiet_loggers:
        logging.getLogger(name).setLevel(quiet_level)
    announce()
    try:
        worker.execute_from_commandline()  # returns only by SystemExit
    except SystemExit as exc:
        if exc.code not in (None, 0):
            raise
