"""The demo: the shipped heavy-rain scenario, replayed into a running stack as a 5-minute show.

``sonae up --demo`` calls :func:`run_demo` once the stack is ready (the stack
owner wires it; ``make demo`` runs ``sonae up --demo``). The scenario
(``services/drill/scenarios/chiyoda-heavy-rain.jsonl``: 神田川 rising through its thresholds,
flooding reports, shelters filling, a landslide warning, HQ approvals, the
all-clear and lifts; 5 h 20 min of event time) is replayed into the stack's own
namespace at the speed that fits :data:`DEMO_SECONDS`, with its recorded HQ
decisions, so the dashboard moves for a newcomer without anyone typing.

Like every replay, each event is flagged ``exercise``. In the live namespace
exercise traffic drives nothing (no decision, shelter state, broadcast or banner;
HQ sees the events as exercise), so run the demo stack in a drill namespace
(``sonae up --namespace drill.demo --demo``, as ``make demo`` does) to see it
play: decisions, messages on that namespace's own feed, the DRILL banner. Each
demo run derives its own ids (a salt of its start time), so a second demo on the
same database is a new show, not a duplicate the services would ignore.

The show starts by printing ready-made HQ and field-team dashboard links (with
tokens) to its own console — never to a log — so a newcomer can sign in; only
in development mode (``SONAE_DEVELOPMENT=true``, which ``make demo`` sets).
Elsewhere tokens come from ``sonae token issue``.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from typing import Final, TextIO

from infra.settings import Settings
from schemas.common import utc_now
from schemas.region import load_region
from services.common.auth import Role, issue_token
from services.drill.hq import HqMode
from services.drill.logformat import read_log
from services.drill.replay import Step
from services.drill.runner import ReplayOptions, replay
from services.drill.scenarios import DEFAULT, scenario_path
from sonae import registry

__all__ = ["DEMO_SECONDS", "SCENARIO", "demo_links", "demo_speed", "run_demo"]

SCENARIO: Final = scenario_path(DEFAULT)
STAFF_SHELTER: Final = "e1310100006201"
"""The shelter the demo's staff link runs, if the region has it (区立スポーツセンター in
Chiyoda: the demo's households check in there); else the region's first shelter."""
DEMO_SECONDS: Final = 300.0
"""How long the show lasts (wall clock)."""


def demo_speed(span_seconds: float, show_seconds: float = DEMO_SECONDS) -> float:
    """The speed factor that plays ``span_seconds`` of event time in ``show_seconds``."""
    return max(1.0, span_seconds / show_seconds)


def demo_links(settings: Settings) -> list[str]:
    """Console lines with HQ and field-team dashboard links (tokens); none outside dev mode."""
    if not settings.development:
        return []
    ttl = min(timedelta(hours=12), settings.token_max_ttl)
    region = load_region(settings.region)
    area = region.districts[0].id
    hq = issue_token(settings.token_secret, Role.HQ, "demo-hq-officer", ttl)
    field = issue_token(settings.token_secret, Role.FIELD, "demo-team", ttl, areas=[area])
    shelters = [s for s in region.sites if s.is_shelter]
    site = next((s for s in shelters if s.id == STAFF_SHELTER), shelters[0])
    shelter, staff_area = site.id, site.district_id
    staff = issue_token(settings.token_secret, Role.SHELTER_STAFF, "demo-shelter-staff", ttl,
                        areas=[staff_area], shelters=[shelter])
    base = f"http://{settings.host}:{settings.dashboard_port}/"
    return [f"  HQ view:           {base}#token={hq}",
            f"  field view ({area}): {base}#token={field}",
            f"  shelter staff ({shelter}): {base}#token={staff}",
            f"  public portal:     {base}"]


async def run_demo(settings: Settings, *, out: TextIO,
                   stop: asyncio.Event | None = None, scenario: str = DEFAULT) -> None:
    """Replay a shipped scenario into ``settings.namespace`` (the running stack's) as a show."""
    log = read_log(scenario_path(scenario))
    assert log.start is not None and log.end is not None  # the shipped scenario has inputs
    speed = demo_speed((log.end - log.start).total_seconds())
    names = {spec.name for spec in registry.SERVICES}
    # The stack runs every registered service; the decision service may still be starting,
    # which the replay's first wait allows for.
    services = ("evacuation" in names, bool({"shelter-tracker", "shelter_tracker"} & names))
    options = ReplayOptions(speed=speed, hq=HqMode.REPLAY, allow_live=True,
                            salt=utc_now().strftime("demo-%Y%m%dT%H%M%S"))
    out.write(f"Demo: {log.header.description}\n"
              f"  replaying {len(log.inputs)} events at {speed:.0f}× (about "
              f"{DEMO_SECONDS / 60:.0f} minutes) into namespace "
              f"{settings.namespace or 'live'}; every event is flagged exercise\n")
    for line in demo_links(settings):
        out.write(line + "\n")
    out.flush()
    # The replay's watcher assigns partitions; aiokafka announces each assignment at INFO,
    # which in the stack's output reads like a service talking. The demo's own lines say
    # what happens.
    logging.getLogger("aiokafka.consumer.subscription_state").setLevel(logging.WARNING)
    reported = -1

    def progress(sent: int, total: int, behind: float, last: Step | None) -> None:
        nonlocal reported
        tenth = sent * 10 // max(total, 1)
        if tenth != reported:
            reported = tenth
            out.write(f"  demo {sent}/{total} events\n")
            out.flush()

    result = await replay(settings, log, settings.namespace, options, stop=stop,
                          progress=progress, services=services)
    state = "stopped" if result.stopped else "finished"
    out.write(f"Demo {state}: {result.sent}/{result.total} events, "
              f"{result.commands_replayed} HQ decisions replayed.\n")
    out.flush()
