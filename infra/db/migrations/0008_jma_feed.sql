-- JMA feed poller (services/jma_feed): what it has fetched, durably, so each feed
-- entry is handled once across restarts. An entry is recorded only after intake
-- acknowledged it (or after it was dead-lettered), so a crash between fetch and
-- acknowledgement fetches it again, and intake's idempotency (the message's
-- identity) makes the second post a replay.

create table jma_feed_entries (
    link         text        primary key,      -- the entry's link: the message's URL
    feed         text        not null,         -- the feed it was listed in
    title        text        not null,         -- the entry's title (Control/Title)
    outcome      text        not null,         -- accepted | replayed | ignored | dead_lettered
    status_code  integer,                      -- intake's answer (null: never reached intake)
    message_id   text,                         -- intake's client_id: jma:<uuid> of the message
    handled_at   timestamptz not null default now()
);

-- Conditional GET validators per feed, saved only after every entry of that
-- version of the feed was handled.
create table jma_feed_state (
    feed           text        primary key,
    etag           text,
    last_modified  text,
    polled_at      timestamptz not null default now()
);
