-- Web Push (RFC 8030/8291/8292) for residents: the VAPID key pair, the browsers'
-- subscriptions, and the fan-out's per-message progress. docs/push.md.

-- The application server's VAPID key pair: one per deployment, created once
-- (`sonae push keys`, or the first gateway/broadcaster start). Browsers bind
-- their subscriptions to the public key, so replacing it orphans them all.
create table push_vapid_keys (
    id          smallint    primary key default 1 check (id = 1),
    private_pem text        not null,                  -- PKCS#8 PEM (py_vapid)
    public_key  text        not null,                  -- base64url uncompressed P-256 point
    created_at  timestamptz not null default now()
);

-- A browser's push subscription and nothing else about the resident: the
-- endpoint and keys the browser gave, up to three areas, a language. The
-- namespace is the gateway's: a drill gateway's subscriptions get only that
-- drill's pushes. Resubscribing (same endpoint) replaces the row in place.
create table push_subscriptions (
    id          bigint      generated always as identity primary key,
    namespace   text        not null,
    endpoint    text        not null,
    origin      text        not null,                  -- scheme://host[:port] of the endpoint
    p256dh      text        not null,                  -- base64url, 65-byte P-256 point
    auth        text        not null,                  -- base64url, 16-byte secret
    areas       text[]      not null check (cardinality(areas) between 1 and 3),
    lang        text        not null check (lang in ('ja', 'en', 'zh', 'ko')),
    created_at  timestamptz not null default now(),
    updated_at  timestamptz not null default now(),
    unique (namespace, endpoint)
);
-- The fan-out reads one origin's subscriptions in one language page by page (id order).
create index push_subscriptions_fanout on push_subscriptions (namespace, lang, origin, id);
create index push_subscriptions_areas on push_subscriptions using gin (areas);

-- The fan-out's progress while a message version is being pushed: one row per
-- subscription whose push is final (sent, failed, removed), so a pass resumed
-- after a crash or a retry skips them. Deleted when the message's fan-out ends:
-- what stays is push_counts, which says how many, never who.
create table push_sent (
    namespace       text    not null,
    message_id      uuid    not null,
    version         integer not null,
    language        text    not null,                  -- the pass that pushed it
    subscription_id bigint  not null,
    outcome         text    not null check (outcome in ('sent', 'failed', 'removed')),
    primary key (namespace, message_id, version, subscription_id)
);

-- What HQ sees of a message's pushes: counts per (message, version, language).
create table push_counts (
    namespace    text        not null,
    message_id   uuid        not null,
    version      integer     not null,
    language     text        not null,
    sent         integer     not null,
    failed       integer     not null,
    removed      integer     not null,
    completed_at timestamptz not null default now(),
    primary key (namespace, message_id, version, language)
);
