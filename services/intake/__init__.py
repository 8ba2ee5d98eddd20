"""Intake: validates, authenticates, deduplicates and enriches field and machine input.

Inputs arrive over HTTP (:mod:`.http`) and the ``intake.raw`` topic (:mod:`.ingest`);
both go through :class:`.service.Intake`, which records each accepted input and its
events in one PostgreSQL transaction (:mod:`.store`) before acknowledging; the
relay (:mod:`.relay`) publishes the outbox to Kafka. Pure rules live in
:mod:`.domain` and :mod:`.cap`; :mod:`.main` wires the process; :mod:`.cli` holds
``sonae token``, ``sonae report`` and ``sonae shelter-status``.
"""
