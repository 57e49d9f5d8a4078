-- The needs list (DESIGN.md §4 "Doc request"): what an agent asks the borrower for, its
-- state, and a timeline of what happened to it. Free text (the agent's note, a rejection
-- reason, the borrower's not-applicable comment) may hold personal details, so it is stored
-- encrypted under the borrower file's key like every other PII field.
create table document_requests (
    id          uuid primary key,
    loan_id     uuid not null references loans (id),
    lead_id     uuid not null references leads (id),
    doc_type    text not null check (doc_type in
                ('bank_statement', 'tax_return', 'w2', 'pay_stub', 'photo_id', 'gift_letter', 'other')),
    note_enc    bytea not null,
    due_date    date,
    state       text not null default 'outstanding' check (state in
                ('outstanding', 'received', 'accepted', 'rejected', 'not_applicable')),
    reason_enc  bytea,
    created_by  text not null,
    created_at  timestamptz not null default now(),
    updated_at  timestamptz not null default now()
);

create index document_requests_loan_idx on document_requests (loan_id, id);

create table document_request_events (
    id          uuid primary key,
    request_id  uuid not null references document_requests (id),
    at          timestamptz not null default now(),
    event       text not null check (event in
                ('requested', 'received', 'accepted', 'rejected', 'not_applicable')),
    by_label    text not null,
    document_id uuid,
    reason_enc  bytea
);

create index document_request_events_request_idx on document_request_events (request_id, id);

alter table documents
    add constraint documents_request_fk foreign key (document_request_id) references document_requests (id);

-- An agent's review of an available document. A rejected document keeps its state (the
-- agent may still open it) but no longer counts against the link's max_files.
alter table documents
    add column review_decision text check (review_decision in ('accept', 'reject')),
    add column review_reason_enc bytea,
    add column reviewed_by text,
    add column reviewed_at timestamptz;

-- Whether the quarantine copy of a decided document is gone. The pipeline removes it after
-- its outcome commits; a crash in between leaves it for the reconciler to remove.
alter table documents add column quarantine_purged boolean not null default false;
