-- Wake the broadcaster's outbox relay as soon as rows commit, as intake's
-- outbox does (0002): the shared relay (services/common/outbox.py) listens on
-- sonae_broadcast_outbox and ignores payloads naming other schemas.
create function broadcast_outbox_notify() returns trigger language plpgsql as $$
begin
    perform pg_notify('sonae_broadcast_outbox', current_schema());
    return null;
end;
$$;

create trigger broadcast_outbox_notify after insert on broadcast_outbox
    for each statement execute function broadcast_outbox_notify();
