-- Notifications (issue 7): one row per event, recipient and channel, so a redelivered event
-- never sends twice. The recipient address is PII: encrypted under the borrower file's key.
create table notifications (
    id                  uuid primary key,
    source_message_id   uuid not null,
    recipient_kind      text not null check (recipient_kind in ('borrower', 'agent')),
    channel             text not null check (channel in ('email', 'sms')),
    template            text not null,
    loan_id             uuid references loans (id),
    lead_id             uuid not null references leads (id),
    recipient_enc       bytea not null,
    state               text not null default 'queued' check (state in ('queued', 'sent', 'failed')),
    attempts            integer not null default 0,
    provider_message_id text,
    last_error          text,
    created_at          timestamptz not null default now(),
    sent_at             timestamptz,
    unique (source_message_id, recipient_kind, channel)
);

create index notifications_loan_idx on notifications (loan_id, id desc);

-- The link's token, encrypted, for links with a borrower email: the emails carry it.
alter table upload_links add column token_enc bytea;
