-- Legal holds (docs/operations/retention.md): compliance places a hold on a lead or a loan,
-- and the borrower file (the lead and all its loans) is never disposed while one is in
-- force. A lifted hold stays, with who lifted it and when. The reason and reference can
-- name people, so they are sealed under the file's data key.
create table legal_holds (
    id             uuid primary key,
    entity_type    text not null check (entity_type in ('lead', 'loan')),
    entity_id      uuid not null,
    lead_id        uuid not null references leads (id),
    reason_enc     bytea not null,
    reference_enc  bytea,
    placed_by      text not null,
    placed_at      timestamptz not null default now(),
    lifted_by      text,
    lifted_at      timestamptz
);

create index legal_holds_active_idx on legal_holds (lead_id) where lifted_at is null;
create index legal_holds_placed_idx on legal_holds (placed_at desc, id desc) where lifted_at is null;
