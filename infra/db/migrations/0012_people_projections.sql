-- The recorder's projections of people and supplies (docs/people.md), per namespace
-- like every projection of migration 0003: households at shelters, residents at
-- home, supply requests, community generators. The folding rules are pure
-- functions in services/recorder/domain.py (order-independent, so a redelivery or
-- a reordering yields the same row); `last_event_id` is the event that last
-- changed a row.
--
-- Personal columns (schemas.people.PERSONAL_FIELDS) are marked "personal" below:
-- `sonae people purge --before T` sets them to null (notes to '') for the events
-- before T, and keeps every count, size, need and area.

-- One row per household code at a shelter: the latest check-in and check-out there.
create table households_current (
    namespace        text        not null,
    shelter_id       text        not null,
    household_code   text        not null,
    status           text        not null check (status in ('in', 'out')),
    size             integer,               -- null: only a check-out seen so far
    needs            text[]      not null,
    language         text,
    name             text,                  -- personal
    contact          text,                  -- personal
    transferred_from text,
    transferred_to   text,
    checked_in_at    timestamptz,           -- event time of the latest check-in
    in_event_id      uuid,
    checked_out_at   timestamptz,           -- event time of the latest check-out
    out_event_id     uuid,
    reporter_team    text,                  -- the team of the latest check-in
    last_event_id    uuid        not null,
    updated_at       timestamptz not null default now(),
    primary key (namespace, shelter_id, household_code)
);
create index households_current_in on households_current (namespace, shelter_id)
    where status = 'in';

-- One row per at-home household (report id): its latest report and latest welfare check.
create table at_home_current (
    namespace          text        not null,
    household_id       uuid        not null,
    area_id            text        not null,
    size               integer,               -- null: only a welfare check seen so far
    needs              text[]      not null,
    via                text,
    contact            text,                  -- personal
    address            text,                  -- personal
    note               text        not null,  -- personal
    reporter_team      text,
    reported_at        timestamptz,
    report_event_id    uuid,
    welfare_outcome    text,
    welfare_note       text        not null,  -- personal
    welfare_checked_by text,
    welfare_checked_at timestamptz,
    welfare_event_id   uuid,
    last_event_id      uuid        not null,
    updated_at         timestamptz not null default now(),
    primary key (namespace, household_id)
);
create index at_home_current_area on at_home_current (namespace, area_id);

-- HQ's counts per area: households and people at home, per need, and the welfare
-- checks still to make (asked for, not yet found safe, moved or needing help).
create view at_home_areas as
select namespace, area_id,
       count(*) filter (where size is not null)                          as households,
       coalesce(sum(size), 0)                                            as people,
       count(*) filter (where 'water' = any(needs))                      as water,
       count(*) filter (where 'food' = any(needs))                       as food,
       count(*) filter (where 'medicine' = any(needs))                   as medicine,
       count(*) filter (where 'medical_power' = any(needs))              as medical_power,
       count(*) filter (where 'welfare_check' = any(needs))              as welfare_check,
       count(*) filter (where 'welfare_check' = any(needs)
                        and (welfare_outcome is null or welfare_outcome = 'not_found'))
                                                                         as welfare_pending
from at_home_current
group by namespace, area_id;

-- One row per supply request: its furthest step and when each step happened.
create table supply_requests_current (
    namespace      text        not null,
    request_id     uuid        not null,
    status         text        not null
        check (status in ('requested', 'assigned', 'dispatched', 'received', 'cancelled')),
    requester_kind text,                  -- null until the request itself is seen
    site_id        text,
    area_id        text,
    lines          jsonb,                 -- the requested lines (item, quantity, note)
    urgency        text,
    requester_team text,
    assignee       text,
    requested_at   timestamptz,
    assigned_at    timestamptz,
    dispatched_at  timestamptz,
    received_at    timestamptz,
    cancelled_at   timestamptz,
    status_at      timestamptz not null,
    status_event_id uuid       not null,
    last_event_id  uuid        not null,
    updated_at     timestamptz not null default now(),
    primary key (namespace, request_id)
);
create index supply_requests_current_open on supply_requests_current (namespace, status)
    where status not in ('received', 'cancelled');

-- One row per generator: its latest registration and its latest reported state.
create table generators_current (
    namespace          text        not null,
    generator_id       text        not null,
    owner              text,                  -- null until registered
    site_id            text,
    area_id            text,
    lat                double precision,
    lon                double precision,
    fuel               text,
    rated_kva          double precision,
    runtime_full_hours double precision,
    registered_at      timestamptz,
    registered_event_id uuid,
    state              text,                  -- null until a status is reported
    fuel_hours_left    double precision,
    state_note         text,
    reporter_team      text,
    state_at           timestamptz,
    state_event_id     uuid,
    last_event_id      uuid        not null,
    updated_at         timestamptz not null default now(),
    primary key (namespace, generator_id)
);
