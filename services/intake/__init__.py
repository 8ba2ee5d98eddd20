"""Intake: validates, authenticates, deduplicates and enriches field and machine input.

Inputs arrive over HTTP (:mod:`.http`) and the ``intake.raw`` topic (:mod:`.ingest`);
both go through :class:`.service.Intake`, which records each accepted input and its
events in one PostgreSQL transaction (:mod:`.store`) before acknowledging; the
relay (:mod:`.relay`) publishes the outbox to Kafka. Pure rules live in
:mod:`.domain`, :mod:`.parsing` and :mod:`.cap`, refusals in :mod:`.errors`; the
HTTP contract (bodies and statuses, rate limit, OpenAPI) in :mod:`.contract`,
:mod:`.ratelimit` and :mod:`.openapi`; :mod:`.main` wires the process. The field
client (``sonae report``, ``sonae shelter-status``) is :mod:`services.field_client`,
``sonae token`` is :mod:`services.common.token_cli`.
"""
