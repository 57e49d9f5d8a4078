-- Loan applications. Owner and team are copied from the lead so scoping is one indexed
-- predicate; the amount is exact (NUMERIC); the property address is encrypted under the
-- borrower file's key like the lead's own address.
create table loans (
    id                     uuid primary key,
    lead_id                uuid not null references leads (id),
    owner_subject          text not null references agents (subject),
    team                   text,
    loan_type              text not null check (loan_type in ('conventional', 'fha', 'va', 'usda', 'jumbo')),
    amount                 numeric(14, 2) not null check (amount > 0),
    property_enc           bytea not null,
    status                 text not null default 'draft'
                           check (status in ('draft', 'submitted', 'underwriting', 'closed', 'denied', 'withdrawn')),
    version                bigint not null default 1,
    los_loan_id            text,
    los_milestone          text,
    needs_attention_reason text,
    needs_attention_since  timestamptz,
    created_at             timestamptz not null default now(),
    updated_at             timestamptz not null default now()
);

create index loans_owner_idx on loans (owner_subject, id desc);
create index loans_team_idx on loans (team, id desc);
create index loans_owner_status_idx on loans (owner_subject, status);
create index loans_team_status_idx on loans (team, status);
create index loans_lead_idx on loans (lead_id);

-- Every transition, with who, when and why (the reason is free text: encrypted).
create table loan_status_history (
    id             bigserial primary key,
    loan_id        uuid not null references loans (id),
    from_status    text not null,
    to_status      text not null,
    actor_subject  text not null,
    reason_enc     bytea,
    at             timestamptz not null default now()
);

create index loan_status_history_loan_idx on loan_status_history (loan_id, id);

-- Grants to loanfolio_app come from the default privileges set with the role.
