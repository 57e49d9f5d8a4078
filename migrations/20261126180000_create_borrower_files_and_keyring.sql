-- One data key per borrower file (a lead and everything under it), stored only wrapped by
-- the key provider, with the master key version that wrapped it (for rewrap after rotation).
create table borrower_files (
    id            uuid primary key,
    wrapped_dek   text not null,
    kek_version   integer not null,
    created_at    timestamptz not null default now(),
    rewrapped_at  timestamptz
);

create index borrower_files_kek_version_idx on borrower_files (kek_version);

-- Installation-wide keys (the SSN blind-index key), wrapped the same way.
create table keyring (
    name         text primary key,
    wrapped_key  text not null,
    kek_version  integer not null,
    created_at   timestamptz not null default now()
);
