-- Disposal blanks a borrower file's rows in every table by its lead
-- (docs/operations/retention.md): each of these tables gets the index that makes that a
-- lookup rather than a scan.
create index documents_lead_idx on documents (lead_id);
create index document_requests_lead_idx on document_requests (lead_id);
create index upload_links_lead_idx on upload_links (lead_id);
create index notifications_lead_idx on notifications (lead_id);
create index unsubscribe_tokens_lead_idx on unsubscribe_tokens (lead_id);
create index legal_holds_lead_idx on legal_holds (lead_id);
