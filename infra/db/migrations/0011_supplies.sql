-- Supply requests and community generators: the state intake checks a command
-- against, written in the same transaction as the command's idempotency record
-- and its outbox rows (services/intake/supplies_store.py), so an acknowledged
-- step is durable and a refused one changes nothing.
--
-- Per namespace like every intake table (migration 0006): a drill's requests and
-- generators share the tables with live and never its rows.

-- One row per supply request: where it stands, and who may take its next step.
create table supply_requests (
    namespace        text        not null,
    request_id       uuid        not null,
    scope            text        not null,            -- the requesting token's subject
    requester_kind   text        not null check (requester_kind in
                                                 ('shelter', 'facility', 'generator')),
    site_id          text        not null,            -- region-pack site, or generator id
    host_site_id     text,                            -- the region-pack site it stands at
    area_id          text        not null,
    lines            jsonb       not null,
    urgency          text        not null,
    note             text        not null default '',
    requested_by     text        not null,            -- the requesting team
    status           text        not null check (status in
                                                 ('requested', 'assigned', 'dispatched',
                                                  'received', 'cancelled')),
    assignee         text,
    requested_at     timestamptz not null,            -- event time of the request
    updated_at       timestamptz not null,            -- event time of its latest step
    last_event_id    uuid        not null,
    primary key (namespace, request_id)
);

create index supply_requests_site on supply_requests (namespace, site_id, requested_at);
create index supply_requests_status on supply_requests (namespace, status, requested_at);

-- One row per registered generator: its registration (replaced by a later one)
-- and its latest reported state.
create table generators (
    namespace          text             not null,
    generator_id       text             not null,
    owner              text             not null,
    site_id            text,
    area_id            text             not null,
    lat                double precision not null,
    lon                double precision not null,
    fuel               text             not null,
    rated_kva          double precision not null,
    runtime_full_hours double precision not null,
    registered_by      text             not null,
    registered_at      timestamptz      not null,
    state              text check (state in ('running', 'stopped', 'fuel_low', 'fault')),
    fuel_hours_left    double precision,
    state_at           timestamptz,                   -- event time of the latest state
    primary key (namespace, generator_id)
);
