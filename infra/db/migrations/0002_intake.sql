-- Intake: idempotency records, the transactional outbox, and report outcomes.
-- An input is acknowledged only after its idempotency record and its events'
-- outbox rows are committed together; the relay publishes the outbox to Kafka
-- afterwards and marks rows sent, so nothing acknowledged is lost when the
-- broker (memory-only in the embedded profile) or intake itself dies.

-- One row per (kind, scope, client id): the first receipt of an input and the
-- answer given to it. A resend with the same body gets the stored answer; a
-- different body under the same id is a conflict. A rejected report's row may
-- be replaced by a corrected resend (see services/intake/domain.py).
create table intake_requests (
    id           bigint generated always as identity primary key,
    kind         text        not null,            -- report | shelter | hazard | cap
    scope        text        not null,            -- the token subject (or raw:<source>)
    client_id    text        not null,
    body_hash    text        not null,            -- sha256 of the canonical validated input
    status_code  integer     not null,            -- 202 accepted, 422 rejected
    response     jsonb       not null,            -- the body returned to the client
    report_id    uuid,
    event_ids    uuid[]      not null default '{}',
    created_at   timestamptz not null default now(),
    updated_at   timestamptz not null default now(),
    unique (kind, scope, client_id)
);

-- Events waiting to be (or already) published. The topic is qualified with the
-- namespace at write time, so a relay never has to guess where a row goes.
create table outbox (
    id           bigserial   primary key,
    topic        text        not null,
    key          bytea,
    value        bytea       not null,
    event_id     uuid        not null unique,     -- a second write of one event fails
    event_type   text        not null,
    created_at   timestamptz not null default now(),
    sent_at      timestamptz
);

-- The relay only ever scans unsent rows, in id order.
create index outbox_unsent on outbox (id) where sent_at is null;

-- Wake the relay as soon as rows commit (NOTIFY is delivered at commit). The
-- payload names the schema so relays of other schemas in the same database
-- (tests) can ignore it.
create function outbox_notify() returns trigger language plpgsql as $$
begin
    perform pg_notify('sonae_outbox', current_schema());
    return null;
end;
$$;

create trigger outbox_notify after insert on outbox
    for each statement execute function outbox_notify();

-- What happened to each field report, for GET /v1/reports/{id}.
create table report_status (
    report_id          uuid        primary key,
    scope              text        not null,
    client_report_id   text        not null,
    team               text,
    status             text        not null check (status in ('accepted', 'rejected')),
    reasons            jsonb       not null default '[]',
    area_id            text,
    outside_region     boolean,
    submitted_event_id uuid,
    accepted_event_id  uuid,
    rejected_event_id  uuid,
    received_at        timestamptz not null,
    updated_at         timestamptz not null default now(),
    unique (scope, client_report_id)
);

create index report_status_client on report_status (client_report_id);
