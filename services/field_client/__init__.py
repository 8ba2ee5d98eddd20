"""The field client: ``sonae report`` and ``sonae shelter-status`` for a phone on a bad connection.

It talks to intake over HTTP only (never imports :mod:`services.intake`):
:mod:`.outbox` keeps each input durably on the device, :mod:`.delivery` sends
it with the same id until intake answers, :mod:`.cli` holds the commands. The
request bodies it checks locally are intake's own (:mod:`schemas.intake`).
"""
