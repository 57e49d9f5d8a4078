-- Leads. Names, status, purpose and source stay in the clear (search, lists); everything
-- else about the borrower is encrypted per field under the borrower file's data key, with
-- the table, column and row id as AAD (DESIGN.md §2).
create table leads (
    id                uuid primary key references borrower_files (id),
    owner_subject     text not null references agents (subject),
    team              text,
    first_name        text not null,
    last_name         text not null,
    email_enc         bytea,
    phone_enc         bytea,
    ssn_enc           bytea,
    -- HMAC blind index of the SSN, truncated to 16 bits: shared by many leads by design.
    ssn_index         integer,
    date_of_birth_enc bytea,
    annual_income_enc bytea,
    address_enc       bytea,
    notes_enc         bytea,
    loan_purpose      text check (loan_purpose in ('purchase', 'refinance', 'cash_out_refinance', 'home_equity')),
    source            text,
    status            text not null default 'new'
                      check (status in ('new', 'contacted', 'qualified', 'converted', 'lost')),
    version           bigint not null default 1,
    created_at        timestamptz not null default now(),
    updated_at        timestamptz not null default now()
);

-- Lists are newest first (UUIDv7 ids sort by creation) within an owner or a team.
create index leads_owner_idx on leads (owner_subject, id desc);
create index leads_team_idx on leads (team, id desc);
create index leads_ssn_index_idx on leads (ssn_index) where ssn_index is not null;
create index leads_name_idx on leads (lower(last_name), lower(first_name));

-- The audit log (DESIGN.md §2): append-only, PII-free, hash-chained. One chain per borrower
-- file (chain_id = the file; the nil uuid for installation-wide events) rather than one
-- global chain: a global chain would serialise every audited write in the installation
-- behind one row lock, and the leads benchmark needs hundreds of writes per second. Within
-- a chain, `audit_chains` is locked FOR UPDATE for the length of the writing transaction,
-- which orders that file's entries without blocking any other file.
create table audit_chains (
    chain_id   uuid primary key,
    last_seq   bigint not null,
    last_hash  bytea not null
);

create table audit_log (
    seq            bigserial primary key,
    chain_id       uuid not null,
    chain_seq      bigint not null,
    prev_hash      bytea not null,
    hash           bytea not null,
    at             timestamptz not null default now(),
    actor_subject  text not null,
    actor_roles    text[] not null,
    action         text not null,
    entity_type    text not null,
    entity_id      uuid not null,
    request_id     text,
    details        jsonb not null default '{}',
    unique (chain_id, chain_seq)
);

create index audit_log_entity_idx on audit_log (entity_type, entity_id, seq);
create index audit_log_actor_idx on audit_log (actor_subject, seq);
create index audit_log_at_idx on audit_log (at);

create function audit_log_is_append_only() returns trigger language plpgsql as $$
begin
    raise exception 'audit_log is append-only (% refused)', tg_op
        using errcode = 'insufficient_privilege';
end;
$$;

create trigger audit_log_no_update before update or delete on audit_log
    for each row execute function audit_log_is_append_only();
create trigger audit_log_no_truncate before truncate on audit_log
    for each statement execute function audit_log_is_append_only();

-- The transactional outbox (DESIGN.md §1): written in the same transaction as the change;
-- the relay publishes and marks rows. Payloads carry ids and states only.
create table outbox (
    id            uuid primary key,
    topic         text not null,
    payload       jsonb not null,
    headers       jsonb not null default '{}',
    created_at    timestamptz not null default now(),
    published_at  timestamptz
);

create index outbox_unpublished_idx on outbox (created_at) where published_at is null;

create function outbox_notify() returns trigger language plpgsql as $$
begin
    perform pg_notify('loanfolio_outbox', '');
    return null;
end;
$$;

create trigger outbox_notify after insert on outbox
    for each statement execute function outbox_notify();
