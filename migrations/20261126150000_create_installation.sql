-- The installation's identity: one row, created with the schema. Support bundles and
-- metrics name an installation by this id, never by anything about its borrowers.
create table installation (
    id          uuid primary key,
    singleton   boolean not null default true unique check (singleton),
    created_at  timestamptz not null default now()
);

-- gen_random_uuid() is core PostgreSQL since 13.
insert into installation (id) values (gen_random_uuid());
