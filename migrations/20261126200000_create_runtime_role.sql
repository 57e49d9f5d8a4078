-- The least-privilege role the service runs as (DESIGN.md §2): it may read and write the
-- application's tables but only INSERT and SELECT the audit log. `loanfolio migrate` runs as
-- the schema owner; the service's login user is made a member of `loanfolio_app`
-- (`grant loanfolio_app to <login user>`), by IT or by this migration's caller.
--
-- Roles are cluster-wide: create it only if missing, and skip (with a notice) when the
-- schema owner may not create roles — IT then creates it with the grants below
-- (docs: installation).
do $$
begin
    if not exists (select from pg_roles where rolname = 'loanfolio_app') then
        begin
            create role loanfolio_app nologin;
        exception when insufficient_privilege then
            raise notice 'cannot create role loanfolio_app; create it and re-run the grants of this migration';
            return;
        end;
    end if;
    grant usage on schema public to loanfolio_app;
    grant select, insert, update, delete on all tables in schema public to loanfolio_app;
    revoke update, delete, truncate on audit_log from loanfolio_app;
    grant usage, select on all sequences in schema public to loanfolio_app;
    alter default privileges in schema public grant select, insert, update, delete on tables to loanfolio_app;
    alter default privileges in schema public grant usage, select on sequences to loanfolio_app;
end
$$;
