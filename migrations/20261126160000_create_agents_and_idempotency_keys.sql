-- Agents are provisioned just in time from their token's claims on first use. Agents'
-- own work contact details are not borrower data; they stay in the clear.
create table agents (
    subject        text primary key,
    display_name   text not null,
    email          text,
    team           text,
    roles          text[] not null default '{}',
    first_seen_at  timestamptz not null default now(),
    last_seen_at   timestamptz not null default now()
);

create index agents_team_idx on agents (team);

-- Idempotency keys (DESIGN.md §3): one row per principal and key. `in_flight` while the
-- first request runs; `completed` with the response to replay. Failed requests delete
-- their row so the client can correct and retry with the same key.
create table idempotency_keys (
    principal        text not null,
    idempotency_key  text not null,
    fingerprint      bytea not null,
    state            text not null check (state in ('in_flight', 'completed')),
    locked_until     timestamptz not null,
    response_status  smallint,
    response_headers jsonb,
    response_body    bytea,
    created_at       timestamptz not null default now(),
    expires_at       timestamptz not null,
    primary key (principal, idempotency_key)
);

create index idempotency_keys_expires_idx on idempotency_keys (expires_at);
