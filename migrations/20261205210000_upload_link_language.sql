-- A link's language (docs/api.md): the borrower's page and emails for that link use it
-- unless the borrower switches on the page. Absent: the browser's Accept-Language, else
-- English.
alter table upload_links
    add column language text check (language in ('en', 'es'));
