-- Residents sheltering at home (在宅避難者): what intake checks a welfare check
-- against, per namespace like every intake table (migration 0006), so a drill's
-- households are never live ones and the reverse.
--
-- One row per household reported at home (services/intake/athome.py): its area
-- and what it needs, the revision of its latest report (a resend under the same
-- client id with another body replaces the report: revision + 1, a new event),
-- and the latest welfare check's outcome. No personal field is kept here: the
-- contact, address and notes travel in the events only (HQ reads them there;
-- `sonae people purge` removes them from the event store).

create table athome_households (
    namespace        text        not null default '',
    household_id     uuid        not null,
    area_id          text        not null,
    size             integer     not null check (size between 1 and 50),
    needs            text[]      not null default '{}',
    via              text        not null check (via in ('public', 'field')),
    revision         integer     not null check (revision >= 1),
    reported_at      timestamptz not null,
    last_check       text,
    checked_at       timestamptz,
    updated_at       timestamptz not null default now(),
    primary key (namespace, household_id)
);

create index athome_households_area on athome_households (namespace, area_id);
