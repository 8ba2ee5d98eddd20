"""What the drill needs from outside itself: a way to run a namespace's services.

The drill replays into a namespace and, for ``sonae drill run`` and ``verify``,
needs the decision services running there. Which services exist is the
composition root's knowledge (:mod:`sonae.registry`), so the drill never
imports it: the root hands a :class:`ServicesLauncher` in
(:func:`sonae.drill_services.running_services`), to :func:`services.drill.verify.verify`
as an argument and to the ``sonae drill`` commands as the click context's
object (:class:`DrillContext`).
"""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Protocol

from infra.settings import Settings

__all__ = ["DECISION_SERVICES", "DrillContext", "RunningServices", "ServicesLauncher"]

DECISION_SERVICES: Final = ("shelter-tracker", "evacuation", "broadcaster")
"""What ``verify`` needs: the services whose outputs are the decisions compared.
(Names not registered are skipped; the registry is the one source.)"""


class RunningServices(Protocol):
    """The services running for one drill namespace."""

    @property
    def names(self) -> tuple[str, ...]:
        """The services started."""

    @property
    def addresses(self) -> dict[str, str]:
        """Dashboard, websocket, intake, CAP feed of the drill."""

    @property
    def runs_decisions(self) -> bool:
        """Whether the evacuation decision service is among them."""

    @property
    def runs_tracker(self) -> bool:
        """Whether the shelter tracker is among them."""

    def crashing(self) -> list[str]:
        """Services that have exited and been restarted."""


class ServicesLauncher(Protocol):
    """Runs the registered services (or those of ``names``) for ``namespace`` during a block."""

    def __call__(self, base: Settings, namespace: str, *,
                 names: Iterable[str] | None = None,
                 log_path: Path | None = None) -> AbstractAsyncContextManager[RunningServices]:
        ...


@dataclass(frozen=True)
class DrillContext:
    """The click context object of ``sonae drill``: the ports the root wires in."""

    launch_services: ServicesLauncher
