-- Households at shelters: the current state intake checks a check-in, check-out
-- or transfer against (docs/people.md). Written in the same transaction as the
-- command's idempotency record and its events' outbox rows
-- (services/intake/store.py), so an acknowledged command is durable and a
-- refused one changes nothing.
--
-- Per namespace like every intake table (0006): a drill's households are not
-- live's, and the same code may be in at a live shelter and in a drill.
--
-- One row per household code: where it was last checked in and whether it is
-- still there. A transfer moves the row to the destination. name and contact are
-- personal data (schemas.people.PERSONAL_FIELDS): a purge clears them here too,
-- keeping size and needs.
create table households (
    namespace       text        not null,
    household_code  text        not null,
    shelter_id      text        not null,             -- the site it is (or was last) in
    size            integer     not null check (size between 1 and 50),
    needs           text[]      not null default '{}',
    language        text,
    name            text,                             -- personal
    contact         text,                             -- personal
    checked_in      boolean     not null,             -- false once checked out
    checked_in_at   timestamptz not null,             -- event time of the last check-in
    checked_out_at  timestamptz,                      -- event time of the last check-out
    updated_at      timestamptz not null default now(),
    primary key (namespace, household_code)
);

-- A shelter's households in: what a staff view or a reconciliation reads.
create index households_at on households (namespace, shelter_id) where checked_in;
