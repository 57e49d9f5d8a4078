-- Browser sessions. Redis holds the hot copy; this table is the durable one, so sessions
-- survive a Redis outage (DESIGN.md §3: Redis is never the only copy of anything). Ids are
-- stored hashed: a database reader cannot replay a cookie.
create table sessions (
    id_hash     bytea primary key,
    subject     text not null,
    actor       jsonb not null,
    csrf_token  text not null,
    created_at  timestamptz not null default now(),
    expires_at  timestamptz not null
);

create index sessions_expires_idx on sessions (expires_at);
create index sessions_subject_idx on sessions (subject);

-- An authorization request in progress: state → PKCE verifier, nonce and where to return.
create table oidc_logins (
    state_hash     bytea primary key,
    pkce_verifier  text not null,
    nonce          text not null,
    return_to      text not null,
    expires_at     timestamptz not null
);
