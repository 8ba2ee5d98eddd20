"""The recorder: appends every event to the PostgreSQL event store, once, and keeps
projections (current reports, shelters, orders, broadcasts); exports windows of the
store as JSONL and rehydrates an empty broker from it.

Modules: ``domain`` (pure rows and reducers), ``store`` (asyncpg), ``consumer``
(aiokafka batches), ``main`` (process wiring), ``export``, ``rehydrate``, ``cli``.
"""
