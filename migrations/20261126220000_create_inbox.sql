-- Messages each consumer has processed (delivery is at-least-once): written in the same
-- transaction as the consumer's work, so a redelivery after a crash is recognised.
create table inbox (
    consumer      text not null,
    message_id    uuid not null,
    processed_at  timestamptz not null default now(),
    primary key (consumer, message_id)
);
