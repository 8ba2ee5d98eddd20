"""How every service process runs: one event loop, one task group, a bounded stop.

``run_service`` installs SIGTERM/SIGINT handlers that set a stop event, runs the
service's coroutine with it, and gives the service ``stop_grace`` seconds to
finish after the signal before cancelling it. Nothing is fired and forgotten:
the service's tasks live in its own ``asyncio.TaskGroup``.

Before the loop starts, :func:`tune_gc` moves everything loaded at start-up
(modules, schemas, the region pack) out of the collector's reach and makes
young-generation collections rarer. Every service decodes thousands of pydantic
events a second, each a dozen or more tracked objects; with CPython's default
thresholds the collector re-traverses the batch being built again and again
(``benchmarks/gc_thresholds.py``).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
from collections.abc import Callable, Coroutine
from typing import Any

from infra.settings import Settings

log = logging.getLogger(__name__)

ServiceMain = Callable[[Settings, asyncio.Event], Coroutine[Any, Any, None]]

GC_THRESHOLDS = (50_000, 20, 100)
"""Allocations before a young collection, then young collections per middle one, and
middle ones per full one (CPython's defaults: 700, 10, 10). Cyclic garbage still goes,
only in fewer, larger sweeps; see ``benchmarks/gc_thresholds.py`` for the measurement."""


def tune_gc(thresholds: tuple[int, int, int] = GC_THRESHOLDS) -> None:
    """Freeze what start-up allocated and raise the collector's thresholds.

    Call once, after the imports and before the service's work starts: frozen
    objects are never traversed again (they are not freed either, which is right
    for modules and configuration that live as long as the process).
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*thresholds)


async def serve(main: ServiceMain, settings: Settings, *, stop_grace: float = 10.0) -> None:
    """Run ``main(settings, stop)`` until it returns; cancel it if it outlives the grace."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    task = asyncio.create_task(main(settings, stop), name="service-main")
    try:
        stopper = asyncio.create_task(stop.wait(), name="stop-signal")
        done, _ = await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if task not in done:
            try:
                await asyncio.wait_for(asyncio.shield(task), stop_grace)
            except TimeoutError:
                log.warning("service did not stop within %.0fs of the signal; cancelling",
                            stop_grace)
                task.cancel()
        stopper.cancel()
        await task
    except asyncio.CancelledError:
        pass
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


def run_service(main: ServiceMain, settings: Settings, *, stop_grace: float = 10.0) -> None:
    """Blocking entry point used by ``sonae service run NAME``."""
    tune_gc()
    asyncio.run(serve(main, settings, stop_grace=stop_grace))
