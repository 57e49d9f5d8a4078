-- Credit pulls (DESIGN.md §3, §4 "Credit pull", "Consent"). The consent that makes a pull
-- permissible (FCRA) is stored with it; the consenting borrower's IP is PII and encrypted.
-- The full bureau report is encrypted under the borrower file's key; the summary (score,
-- bureau, report id, pulled_at) stays in columns for lists and the dashboard.
create table credit_reports (
    id                   uuid primary key,
    lead_id              uuid not null references leads (id),
    pull_type            text not null check (pull_type in ('soft', 'hard')),
    status               text not null default 'queued'
                         check (status in ('queued', 'in_progress', 'completed', 'failed')),
    consent_obtained_at  timestamptz not null,
    consent_method       text not null check (consent_method in ('written', 'electronic', 'verbal')),
    consent_text_version text not null,
    consent_ip_enc       bytea,
    consent_obtained_by  text not null,
    -- reissue / upgrade: the pull whose bureau report this one refers to
    based_on             uuid references credit_reports (id),
    request_kind         text not null default 'new' check (request_kind in ('new', 'reissue', 'upgrade')),
    score                integer,
    bureau               text,
    bureau_report_id     text,
    pulled_at            timestamptz,
    failure_reason       text,
    report_enc           bytea,
    attempts             integer not null default 0,
    created_by           text not null,
    created_at           timestamptz not null default now(),
    updated_at           timestamptz not null default now()
);

create index credit_reports_lead_idx on credit_reports (lead_id, id desc);
