-- Document reminders (issue 7): how many a request has had and when the last went out.
alter table document_requests
    add column reminders_sent   integer not null default 0,
    add column last_reminded_at timestamptz;

-- The scheduler's scan: only requests still waiting on the borrower.
create index document_requests_remindable_idx on document_requests (loan_id)
    where state in ('outstanding', 'rejected');

-- A borrower's one-click unsubscribe from non-transactional email (reminders). Transactional
-- messages (the link invitation, rejections, status changes) still go out.
alter table leads add column email_opted_out_at timestamptz;

-- Unsubscribe tokens: only the SHA-256 of the token is kept, like upload-link tokens.
create table unsubscribe_tokens (
    token_hash bytea primary key,
    lead_id    uuid not null references leads (id),
    created_at timestamptz not null default now()
);
