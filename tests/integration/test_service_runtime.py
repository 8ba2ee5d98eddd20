"""A service process stops cleanly on SIGTERM within a bounded time."""

from __future__ import annotations

import asyncio
import os
import signal
import time

from infra.settings import Settings, load_settings
from services.common.runtime import serve


async def test_sigterm_sets_stop_and_the_service_returns() -> None:
    """SIGTERM sets the stop event and serve returns when the service does."""
    finished: list[str] = []

    async def main(settings: Settings, stop: asyncio.Event) -> None:
        await stop.wait()
        finished.append("clean")

    runner = asyncio.create_task(serve(main, load_settings()))
    await asyncio.sleep(0)  # let serve install its handlers
    await asyncio.sleep(0.05)
    os.kill(os.getpid(), signal.SIGTERM)
    await asyncio.wait_for(runner, 5)
    assert finished == ["clean"]


async def test_service_ignoring_stop_is_cancelled_after_grace() -> None:
    """A service that ignores the stop event is cancelled once the grace period ends."""
    cancelled: list[bool] = []

    async def main(settings: Settings, stop: asyncio.Event) -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    started = time.monotonic()
    runner = asyncio.create_task(serve(main, load_settings(), stop_grace=0.3))
    await asyncio.sleep(0.05)
    os.kill(os.getpid(), signal.SIGTERM)
    await asyncio.wait_for(runner, 5)
    assert cancelled == [True]
    assert time.monotonic() - started < 3
