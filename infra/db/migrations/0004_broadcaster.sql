-- Broadcaster: composed messages, deliveries (one per message version, language
-- and channel), the CAP feed, webhook subscriber health and the outbox of
-- delivery events. Protocol and per-channel guarantees: docs/broadcaster.md.

-- One row per (namespace, message, version) the broadcaster has planned. A
-- redelivered Kafka record finds its row and plans nothing again; the CAP
-- builder reads the previous version's identifier and sent time from here.
create table broadcast_messages (
    namespace       text        not null,
    message_id      uuid        not null,
    version         integer     not null,
    kind            text        not null,
    subject         text        not null,              -- order id or shelter id
    exercise        boolean     not null,
    occurred_at     timestamptz not null,              -- the cause's event time (CAP sent)
    cause_event_id  uuid        not null,
    correlation_id  uuid        not null,
    cap_identifier  text,
    created_at      timestamptz not null default now(),
    primary key (namespace, message_id, version)
);

-- The delivery ledger and work queue. The unique key is the exactly-once
-- promise: a (message, version, language, channel) is planned once and
-- delivered at most once by the ledger (see docs for the webhook caveat).
-- state: pending → sending → delivered | retry → sending … | failed;
--        refused (drill guard) and superseded (a newer version came first) are final.
create table broadcast_deliveries (
    id              bigint generated always as identity primary key,
    namespace       text        not null,
    message_id      uuid        not null,
    version         integer     not null,
    language        text        not null,
    channel         text        not null,
    delivery_id     uuid        not null unique,        -- Sonae-Delivery-Id, stable across attempts
    state           text        not null check (state in ('pending', 'sending', 'retry',
                                    'delivered', 'failed', 'refused', 'superseded')),
    exercise        boolean     not null,
    cause_event_id  uuid        not null,
    correlation_id  uuid        not null,
    attempt         integer     not null default 0,
    next_attempt_at timestamptz not null default now(),
    lease_until     timestamptz,                        -- a 'sending' row past this is reclaimed
    body            bytea       not null,
    meta            jsonb       not null default '{}',
    last_error      text,
    receipt         text,
    delivered_at    timestamptz,
    created_at      timestamptz not null default now(),
    updated_at      timestamptz not null default now(),
    unique (namespace, message_id, version, language, channel)
);
create index broadcast_deliveries_open on broadcast_deliveries (namespace, channel, id)
    where state in ('pending', 'sending', 'retry');
create index broadcast_deliveries_message on broadcast_deliveries (namespace, message_id, version);

-- CAP documents served by the broadcaster's HTTP feed (/cap/alerts.atom).
create table cap_alerts (
    namespace       text        not null,
    identifier      text        not null,
    order_id        uuid        not null,
    version         integer     not null,
    status          text        not null check (status in ('Actual', 'Exercise')),
    msg_type        text        not null check (msg_type in ('Alert', 'Update', 'Cancel')),
    title           text        not null,
    xml             bytea       not null,
    sent            timestamptz not null,
    expires         timestamptz,
    cancelled       boolean     not null default false, -- an earlier version of a lifted order
    superseded      boolean     not null default false, -- a later version exists
    published_at    timestamptz not null default now(),
    primary key (namespace, identifier)
);
create index cap_alerts_current on cap_alerts (namespace, sent desc)
    where not superseded and not cancelled;
create index cap_alerts_order on cap_alerts (namespace, order_id, version);

-- Circuit state per webhook subscriber: after K consecutive failures it is
-- 'down' and only probed at next_probe_at, so its backlog waits instead of
-- being retried against a dead endpoint.
create table webhook_subscribers (
    namespace            text        not null,
    channel              text        not null,
    state                text        not null check (state in ('up', 'down')),
    consecutive_failures integer     not null default 0,
    down_since           timestamptz,
    next_probe_at        timestamptz,
    probe_interval       double precision,           -- seconds; grows while probes fail
    last_error           text,
    updated_at           timestamptz not null default now(),
    primary key (namespace, channel)
);

-- broadcast.requested / delivered / failed events, written in the transaction
-- that changes the ledger and published afterwards by the broadcaster's relay.
create table broadcast_outbox (
    id              bigint generated always as identity primary key,
    topic           text        not null,
    key             bytea,
    value           bytea       not null,
    event_id        uuid        not null unique,
    created_at      timestamptz not null default now(),
    sent_at         timestamptz
);
create index broadcast_outbox_unsent on broadcast_outbox (id) where sent_at is null;
