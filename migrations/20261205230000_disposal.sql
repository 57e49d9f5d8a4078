-- Disposal by crypto-shredding (docs/operations/retention.md). Expanding steps only: a
-- disposed borrower file keeps its row with the wrapped data key destroyed (null), and the
-- lead records when it was disposed so every read of the file answers 404.
alter table borrower_files alter column wrapped_dek drop not null;
alter table borrower_files add column disposed_at timestamptz;
alter table leads add column disposed_at timestamptz;

-- The database copy of the disposal ledger (the other copy is appended outside the
-- database, retention.ledger_path, because a restore overwrites this one). Ids, times and
-- the rule only: no PII. `ledgered_at` and `objects_deleted_at` mark the two steps done
-- after the commit; a round finishes any left undone by a crash.
create table disposals (
    lead_id             uuid primary key references borrower_files (id),
    rule                text not null,
    due_at              timestamptz not null,
    disposed_at         timestamptz not null default now(),
    -- re-applied from the outside ledger by `admin restore`
    replayed            boolean not null default false,
    ledgered_at         timestamptz,
    objects_deleted_at  timestamptz
);

create index disposals_unfinished_idx on disposals (disposed_at)
    where ledgered_at is null or objects_deleted_at is null;
