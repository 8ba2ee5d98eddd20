"""The embedded broker and PostgreSQL that the session starts are real and usable."""

from __future__ import annotations

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.structs import TopicPartition


async def test_postgres_answers_queries(database_url: str) -> None:
    """The session's PostgreSQL accepts connections and runs SQL."""
    conn = await asyncpg.connect(database_url)
    try:
        version = await conn.fetchval("show server_version_num")
        assert int(version) >= 180000
    finally:
        await conn.close()


async def test_schema_isolation(db_pool: asyncpg.Pool, db_schema: str) -> None:
    """A test's pool writes into its own schema."""
    async with db_pool.acquire() as conn:
        await conn.execute("create table probe (x int)")
        await conn.execute("insert into probe values (1)")
        schema = await conn.fetchval(
            "select table_schema from information_schema.tables where table_name = 'probe'"
        )
    assert schema == db_schema


async def test_produce_and_consume_through_the_broker(kafka_bootstrap: str, namespace: str) -> None:
    """Messages produced with acks=all are consumed back in order from the real broker."""
    topic = f"{namespace}.probe"
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    await producer.start()
    try:
        for i in range(20):
            await producer.send_and_wait(topic, f"m{i}".encode(), key=b"k")
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka_bootstrap, enable_auto_commit=False,
                                fetch_max_wait_ms=20)
    await consumer.start()
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        got: list[bytes] = []
        while len(got) < 20:
            batch = await consumer.getmany(tp, timeout_ms=2000)
            records = batch.get(tp, [])
            assert records, "broker returned nothing before the deadline"
            got.extend(r.value for r in records if r.value is not None)
    finally:
        await consumer.stop()
    assert got == [f"m{i}".encode() for i in range(20)]
