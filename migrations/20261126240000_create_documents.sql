-- Documents (DESIGN.md §2, §4). The original filename is encrypted; object keys are opaque
-- ids, never names. `quarantine_key` is where the client PUTs; `object_key` the encrypted
-- copy in the documents bucket once the pipeline accepts it.
create table documents (
    id                   uuid primary key,
    loan_id              uuid not null references loans (id),
    lead_id              uuid not null references leads (id),
    document_request_id  uuid,
    filename_enc         bytea not null,
    content_type         text not null,
    size_bytes           bigint not null check (size_bytes > 0),
    doc_type             text not null check (doc_type in
                         ('bank_statement', 'tax_return', 'w2', 'pay_stub', 'photo_id', 'gift_letter', 'other')),
    state                text not null default 'awaiting_upload' check (state in
                         ('awaiting_upload', 'uploaded', 'scanning', 'available', 'rejected', 'failed', 'expired', 'deleted')),
    reason               text,
    sha256               text,
    detected_type        text,
    duplicate_of         uuid,
    uploaded_by          text not null check (uploaded_by in ('agent', 'borrower')),
    upload_link_id       uuid references upload_links (id),
    created_by           text,
    quarantine_key       text not null,
    object_key           text,
    key_version          integer,
    upload_expires_at    timestamptz not null,
    created_at           timestamptz not null default now(),
    updated_at           timestamptz not null default now()
);

create index documents_loan_idx on documents (loan_id, id desc);
create index documents_state_idx on documents (state, updated_at);
