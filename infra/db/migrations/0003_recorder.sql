-- The recorder's projections (the current state of each aggregate, folded from the
-- event store), its dead-letter archive, and two indexes on the event store.
--
-- Projections exist for queries and cold starts: a service that starts with an
-- empty broker (or a dashboard that wants "every open order now") reads these
-- tables instead of folding the whole log. Each is keyed by namespace + the
-- aggregate's natural key; `last_event_id` is the event that last changed the row
-- and `updated_at` when the recorder wrote it. The folding rules are pure
-- functions in services/recorder/domain.py; every rule is order-independent, so a
-- redelivery or a cross-partition reordering yields the same row.

-- Only a report.accepted names its report id; the submission and any rejection join
-- it through payload.submitted_event_id, whichever of them is stored first. Two small
-- partial indexes (not one over both types): a lookup of rejections must not wade
-- through every acceptance. Compared as uuid: the envelope is stored as the
-- producer wrote it (any letter case).
create index events_accepted_submission
    on events (((envelope #>> '{payload,submitted_event_id}')::uuid))
    where type = 'report.accepted';
create index events_rejected_submission
    on events (((envelope #>> '{payload,submitted_event_id}')::uuid))
    where type = 'report.rejected';

create table reports_current (
    namespace          text        not null,
    report_id          uuid        not null,
    status             text        not null check (status in ('submitted', 'accepted', 'rejected')),
    status_at          timestamptz not null,  -- event time of the event that set the status
    status_event_id    uuid        not null,
    reasons            jsonb,                 -- rejection reasons (status 'rejected')
    submitted_event_id uuid,                  -- the latest report.submitted
    submitted_at       timestamptz,
    client_report_id   text,
    reporter_team      text,
    category           text,
    severity           smallint,
    area_id            text,
    outside_region     boolean,               -- null until accepted
    lat                double precision,
    lon                double precision,
    details_at         timestamptz,
    details_event_id   uuid,                  -- join events on it for the whole report body
    last_event_id      uuid        not null,
    updated_at         timestamptz not null default now(),
    primary key (namespace, report_id)
);
create index reports_current_area on reports_current (namespace, area_id, status);

create table shelters_current (
    namespace     text        not null,
    shelter_id    text        not null,
    version       integer     not null,
    status        text        not null,
    name          text        not null,
    occupancy     integer     not null,
    capacity      integer,
    state         jsonb       not null,  -- the whole shelter.status_changed payload
    changed_at    timestamptz not null,
    last_event_id uuid        not null,
    updated_at    timestamptz not null default now(),
    primary key (namespace, shelter_id)
);

create table orders_current (
    namespace              text        not null,
    order_id               uuid        not null,
    version                integer     not null,
    status                 text        not null check (status in ('active', 'lifted')),
    level                  smallint    not null,
    hazard                 text        not null,
    area_ids               text[]      not null,
    designated_shelter_ids text[]      not null,
    issued_by              text        not null,
    approved_at            timestamptz not null,
    automatic              boolean     not null,
    recommendation_id      uuid,
    lifted_by              text,
    lift_reason            text,
    state                  jsonb       not null,  -- the whole order payload at this version
    changed_at             timestamptz not null,
    last_event_id          uuid        not null,
    updated_at             timestamptz not null default now(),
    primary key (namespace, order_id)
);
create index orders_current_active on orders_current (namespace) where status = 'active';

create table broadcasts_current (
    namespace       text        not null,
    message_id      uuid        not null,
    version         integer     not null,
    language        text        not null,
    channel         text        not null,
    status          text        not null check (status in ('requested', 'delivered', 'failed')),
    kind            text,                  -- from broadcast.requested (null if not seen yet)
    attempt         integer     not null,  -- 0 until the first attempt is reported
    will_retry      boolean,
    next_attempt_at timestamptz,
    error           text,
    delivered_at    timestamptz,
    receipt         text,
    status_at       timestamptz not null,
    status_event_id uuid        not null,
    last_event_id   uuid        not null,
    updated_at      timestamptz not null default now(),
    primary key (namespace, message_id, version, language, channel)
);

-- Records some service could not process (the `deadletter` topic). The broker keeps
-- nothing on disk, so this table is where a dead letter survives for repair.
-- letter_id is the SHA-256 of the record's bytes: a redelivered record is stored once.
create table dead_letters (
    namespace  text        not null,
    letter_id  text        not null,
    topic      text        not null,  -- where the failed record was read
    partition  integer     not null,
    "offset"   bigint      not null,
    service    text        not null,
    error      text        not null,
    failed_at  timestamptz not null,
    letter     jsonb       not null,  -- the whole schemas.deadletter.DeadLetter
    stored_at  timestamptz not null default now(),
    primary key (namespace, letter_id)
);
create index dead_letters_failed_at on dead_letters (namespace, failed_at);
