-- The token deny list: `sonae token revoke` inserts a token's jti here; intake and
-- every gateway read it at start, re-read it on the sonae_token_revoked wake-up
-- (payload: the schema) and every SONAE_TOKEN_DENYLIST_POLL_SECONDS, and refuse the
-- token (an open websocket of it is closed with 4401). `seq` lets a reader fetch
-- only what is new. A row may be dropped once `expires_at` has passed: an expired
-- token is refused anyway.
create table revoked_tokens (
    seq        bigint generated always as identity unique,
    jti        text primary key check (length(jti) between 1 and 200),
    expires_at timestamptz,
    revoked_at timestamptz not null default now(),
    revoked_by text not null,
    reason     text not null default ''
);

create function revoked_tokens_notify() returns trigger language plpgsql as $$
begin
    perform pg_notify('sonae_token_revoked', current_schema());
    return null;
end;
$$;

create trigger revoked_tokens_notify after insert on revoked_tokens
    for each statement execute function revoked_tokens_notify();
