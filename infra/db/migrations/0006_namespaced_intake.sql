-- Drill isolation in the database: every intake table, and the broadcaster's
-- outbox, carries the namespace in its keys, so a drill's intake and the live
-- one share a database (and a schema) without sharing anything else:
--
-- - idempotency records are unique per (namespace, kind, scope, client id): a
--   client id a drill used is new to live, and the reverse;
-- - report outcomes are keyed by (namespace, report id) and unique per
--   (namespace, scope, client report id);
-- - outbox rows belong to one namespace; a relay publishes only its own
--   namespace's rows, under a lock of its own namespace (services/common/outbox.py),
--   woken by notifications that name schema and namespace.
--
-- Rows written before this migration are the live namespace's (''), the only
-- namespace intake used to write in practice; the default says so.

alter table intake_requests add column namespace text not null default '';
alter table intake_requests drop constraint intake_requests_kind_scope_client_id_key;
alter table intake_requests add constraint intake_requests_key
    unique (namespace, kind, scope, client_id);

alter table report_status add column namespace text not null default '';
alter table report_status drop constraint report_status_pkey;
alter table report_status add primary key (namespace, report_id);
alter table report_status drop constraint report_status_scope_client_report_id_key;
alter table report_status add constraint report_status_client_key
    unique (namespace, scope, client_report_id);
drop index report_status_client;
create index report_status_client on report_status (namespace, client_report_id);

alter table outbox add column namespace text not null default '';
drop index outbox_unsent;
create index outbox_unsent on outbox (namespace, id) where sent_at is null;

alter table broadcast_outbox add column namespace text not null default '';
drop index broadcast_outbox_unsent;
create index broadcast_outbox_unsent on broadcast_outbox (namespace, id) where sent_at is null;

-- One notification per namespace a statement wrote, with the payload
-- "<schema>/<namespace>": a relay wakes only for its own rows. (A statement
-- trigger with a transition table sees every row the statement inserted.)
create or replace function outbox_notify() returns trigger language plpgsql as $$
begin
    perform pg_notify(tg_argv[0], current_schema() || '/' || n.namespace)
    from (select distinct namespace from inserted) as n;
    return null;
end;
$$;

drop trigger outbox_notify on outbox;
create trigger outbox_notify after insert on outbox
    referencing new table as inserted
    for each statement execute function outbox_notify('sonae_outbox');

drop trigger broadcast_outbox_notify on broadcast_outbox;
drop function broadcast_outbox_notify();
create trigger broadcast_outbox_notify after insert on broadcast_outbox
    referencing new table as inserted
    for each statement execute function outbox_notify('sonae_broadcast_outbox');
