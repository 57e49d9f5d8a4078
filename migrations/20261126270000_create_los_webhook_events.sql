-- LOS webhook deliveries (DESIGN.md §4): deduplicated by the LOS's event id, kept with what
-- became of them (applied, recorded without a status change, or kept for review).
create table los_webhook_events (
    event_id     text primary key,
    los_loan_id  text not null,
    loan_id      uuid,
    milestone    text not null,
    outcome      text not null,
    occurred_at  timestamptz,
    received_at  timestamptz not null default now()
);

create index loans_los_idx on loans (los_loan_id) where los_loan_id is not null;
