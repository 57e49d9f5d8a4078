-- Borrower upload links (DESIGN.md §2): a capability bound to one loan. Only the SHA-256 of
-- the token is stored; the token itself is shown once, at creation.
create table upload_links (
    id                  uuid primary key,
    loan_id             uuid not null references loans (id),
    lead_id             uuid not null references leads (id),
    token_hash          bytea not null unique,
    borrower_email_enc  bytea,
    expires_at          timestamptz not null,
    max_files           integer not null check (max_files between 1 and 100),
    revoked_at          timestamptz,
    created_by          text not null,
    created_at          timestamptz not null default now()
);

create index upload_links_loan_idx on upload_links (loan_id, id desc);
