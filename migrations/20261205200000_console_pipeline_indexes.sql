-- The console's pipeline (docs/console.md) lists a scope's loans by last activity, newest
-- first, with a keyset cursor on (updated_at, id): one index per scope the list can take.
create index loans_owner_activity_idx on loans (owner_subject, updated_at desc, id desc);
create index loans_team_activity_idx on loans (team, updated_at desc, id desc);
create index loans_activity_idx on loans (updated_at desc, id desc);
-- The pipeline's "documents outstanding" and "overdue" markers look up a loan's open
-- requests.
create index document_requests_open_idx on document_requests (loan_id, due_date)
    where state in ('outstanding', 'rejected');
