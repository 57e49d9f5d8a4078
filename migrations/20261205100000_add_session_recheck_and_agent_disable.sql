-- Sessions follow the agent's rights (issue 13, defects 2–4): a session is re-checked at
-- most every `auth.session_recheck_secs` — the agent's own `disabled_at` always, and where
-- the provider issued a refresh token (sealed under the installation's session key) by a
-- refresh grant whose refusal ends the session. `recheck_failing_since` starts the grace
-- period while the provider cannot be reached. `provider_sid` is the provider's session id
-- (OIDC Back-Channel Logout ends sessions by it or by subject). `last_seen_at` serves the
-- console's idle timeout.
alter table sessions
    add column refresh_token_enc     bytea,
    add column checked_at            timestamptz not null default now(),
    add column recheck_failing_since timestamptz,
    add column provider_sid          text,
    add column last_seen_at          timestamptz not null default now();

create index sessions_provider_sid_idx on sessions (provider_sid) where provider_sid is not null;

-- A login bound to the browser that started it: the state is the SHA-256 of a pre-login
-- cookie (login CSRF), and a step-up login says so.
alter table oidc_logins
    add column purpose text not null default 'sign_in' check (purpose in ('sign_in', 'step_up'));

-- An admin can disable an agent (and with it every session and token); JIT provisioning
-- writes claims only when they are at least as new as the ones stored (`claims_iat`), so
-- an old token never writes a stale team or role back.
alter table agents
    add column disabled_at timestamptz,
    add column disabled_by text,
    add column claims_iat  bigint;
