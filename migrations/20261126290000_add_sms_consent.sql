-- The borrower's SMS opt-in (TCPA): who recorded it, when, how; an opt-out wins at once.
alter table leads
    add column sms_consent_at      timestamptz,
    add column sms_consent_method  text check (sms_consent_method in ('written', 'electronic', 'verbal')),
    add column sms_consent_by      text,
    add column sms_opted_out_at    timestamptz;
