-- The event store: every event that crossed the bus, once (event_id is unique).
-- The recorder appends here; drills and exports read from here; a broker that
-- lost its memory is rehydrated from here.
create table events (
    seq          bigint generated always as identity primary key,
    event_id     uuid        not null unique,
    type         text        not null,
    schema_version integer   not null,
    topic        text        not null,
    partition    integer     not null,
    "offset"     bigint      not null,
    key          text,
    occurred_at  timestamptz not null,
    recorded_at  timestamptz not null,
    stored_at    timestamptz not null default now(),
    exercise     boolean     not null default false,
    namespace    text        not null default '',
    envelope     jsonb       not null
);

create index events_occurred_at on events (occurred_at);
create index events_type_occurred_at on events (type, occurred_at);
create index events_namespace_seq on events (namespace, seq);
