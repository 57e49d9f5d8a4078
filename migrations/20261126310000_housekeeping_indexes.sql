-- Housekeeping prunes published outbox events after a week and inbox entries after 30 days
-- (src/housekeeping.rs); these keep its deletes from scanning the tables.
create index outbox_published_idx on outbox (published_at) where published_at is not null;
create index inbox_processed_idx on inbox (processed_at);
