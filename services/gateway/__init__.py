"""The websocket gateway: the live common operating picture for HQ, staff, teams and the public.

It folds the COP topics into one picture and streams it over websockets —
a snapshot, then sequenced deltas, with gap-free resume after a reconnect —
serves the dashboard page, and accepts HQ commands and field reports.

Modules: :mod:`.cop` (the picture: entities and deltas), :mod:`.reducer` (the
pure reducer, order-independent), :mod:`.views` (what each role may see),
:mod:`.positions` (offset + epoch positions and bounded history),
:mod:`.hub` (clients, bounded queues, resume), :mod:`.source` (reading the
topics and the event store into the picture), :mod:`.server` (the websocket
protocol), :mod:`.http` (the dashboard page), :mod:`.main` (wiring and
start-up), :mod:`.errors` (the exception tree).
"""
