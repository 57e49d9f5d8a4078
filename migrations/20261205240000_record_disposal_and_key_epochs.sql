-- Record-level disposal (docs/operations/retention.md): rejected documents and sent
-- notifications are disposed one by one under their own rules, before their file is.
alter table documents add column disposed_at timestamptz;
alter table notifications add column disposed_at timestamptz;

create index documents_rejected_live_idx on documents (reviewed_at)
    where review_decision = 'reject' and disposed_at is null;
create index notifications_live_idx on notifications (created_at) where disposed_at is null;

-- Key epochs: each `admin keys retire` (rotate, rewrap, then destroy the older master
-- versions). A file disposed before the last epoch is gone from every backup that still
-- opens; the retention report dates the next one.
create table key_epochs (
    id              bigint generated always as identity primary key,
    retired_below   integer not null,
    provider        text not null,
    retired_at      timestamptz not null default now()
);
