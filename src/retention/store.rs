//! The only code that runs SQL on `legal_holds`; the retention report reads the tables of
//! the records it counts (leads, loans, documents, credit reports, notifications).

use sqlx::PgConnection;
use time::OffsetDateTime;
use uuid::Uuid;

pub struct NewHoldRow<'a> {
    pub id: Uuid,
    pub entity_type: &'a str,
    pub entity_id: Uuid,
    pub lead_id: Uuid,
    pub reason_enc: &'a [u8],
    pub reference_enc: Option<&'a [u8]>,
    pub placed_by: &'a str,
}

pub async fn insert(tx: &mut PgConnection, hold: &NewHoldRow<'_>) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "insert into legal_holds (id, entity_type, entity_id, lead_id, reason_enc, reference_enc, placed_by)
         values ($1, $2, $3, $4, $5, $6, $7)",
        hold.id,
        hold.entity_type,
        hold.entity_id,
        hold.lead_id,
        hold.reason_enc,
        hold.reference_enc,
        hold.placed_by
    )
    .execute(tx)
    .await?;
    Ok(())
}

#[derive(Debug)]
pub struct HoldRow {
    pub id: Uuid,
    pub entity_type: String,
    pub entity_id: Uuid,
    pub lead_id: Uuid,
    pub reason_enc: Vec<u8>,
    pub reference_enc: Option<Vec<u8>>,
    pub placed_by: String,
    pub placed_at: OffsetDateTime,
}

/// The hold `id` while it is in force, locked until the caller's transaction ends.
pub async fn active_for_update(
    tx: &mut PgConnection,
    id: Uuid,
) -> Result<Option<HoldRow>, sqlx::Error> {
    sqlx::query_as!(
        HoldRow,
        "select id, entity_type, entity_id, lead_id, reason_enc, reference_enc, placed_by, placed_at
           from legal_holds where id = $1 and lifted_at is null for update",
        id
    )
    .fetch_optional(tx)
    .await
}

pub async fn lift(tx: &mut PgConnection, id: Uuid, by: &str) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "update legal_holds set lifted_at = now(), lifted_by = $2 where id = $1",
        id,
        by
    )
    .execute(tx)
    .await?;
    Ok(())
}

/// Up to `fetch` holds in force, newest first, placed before the cursor `(at, id)`.
pub async fn active_page(
    conn: &mut PgConnection,
    before: Option<(OffsetDateTime, Uuid)>,
    fetch: i64,
) -> Result<Vec<HoldRow>, sqlx::Error> {
    sqlx::query_as!(
        HoldRow,
        "select id, entity_type, entity_id, lead_id, reason_enc, reference_enc, placed_by, placed_at
           from legal_holds
          where lifted_at is null
            and ($1::timestamptz is null or (placed_at, id) < ($1, $2::uuid))
          order by placed_at desc, id desc limit $3",
        before.map(|b| b.0),
        before.map(|b| b.1),
        fetch
    )
    .fetch_all(conn)
    .await
}

/// How many records one rule finds: due now (the period has passed), due within the next
/// 30 days, and — of those due now — kept by a hold in force on their borrower file.
#[derive(Debug, Default)]
pub struct RuleCounts {
    pub due_now: i64,
    pub due_next_30_days: i64,
    pub held: i64,
}

/// The three counts over `$from` (the start of each record's period) with `$file` (its
/// borrower file's lead id) spliced in; `$1` is the period in days.
macro_rules! rule_counts {
    ($from:literal, $file:literal, $tail:literal $(, $arg:expr)* $(,)?) => {
        sqlx::query_as!(
            RuleCounts,
            r#"select
                 count(*) filter (where "# + $from + r#" < now() - make_interval(days => $1))
                   as "due_now!",
                 count(*) filter (where "# + $from + r#" >= now() - make_interval(days => $1)
                                    and "# + $from + r#" < now() - make_interval(days => $1) + interval '30 days')
                   as "due_next_30_days!",
                 count(*) filter (where "# + $from + r#" < now() - make_interval(days => $1)
                                    and exists (select 1 from legal_holds h
                                                 where h.lead_id = "# + $file + r#" and h.lifted_at is null))
                   as "held!"
               "# + $tail
            $(, $arg)*
        )
    };
}

/// The counts of `rule` (a key of `config::RETENTION_RULES`) at `days`.
pub async fn rule_counts(
    conn: &mut PgConnection,
    rule: &str,
    days: i32,
) -> Result<RuleCounts, sqlx::Error> {
    match rule {
        "leads_without_loan_days" => {
            // Last activity: the lead's own changes and its credit pulls (a pull does not
            // touch the lead's row).
            rule_counts!(
                "f.at",
                "f.lead_id",
                "from (select l.id as lead_id,
                              greatest(l.updated_at,
                                       (select max(c.created_at) from credit_reports c
                                         where c.lead_id = l.id)) as at
                         from leads l
                        where l.disposed_at is null
                          and not exists (select 1 from loans o where o.lead_id = l.id)) f",
                days
            )
            .fetch_one(conn)
            .await
        }
        "loans_denied_days" | "loans_withdrawn_days" | "loans_closed_days" => {
            let status = rule.trim_start_matches("loans_").trim_end_matches("_days");
            rule_counts!(
                "f.at",
                "f.lead_id",
                "from (select o.lead_id,
                              coalesce((select max(s.at) from loan_status_history s
                                         where s.loan_id = o.id and s.to_status = o.status),
                                       o.updated_at) as at
                         from loans o join leads l on l.id = o.lead_id
                        where o.status = $2 and l.disposed_at is null) f",
                days,
                status
            )
            .fetch_one(conn)
            .await
        }
        "documents_rejected_days" => {
            // Only what an agent rejected: a document deleted without a rejection may have
            // been used to evaluate the application, and follows its loan.
            rule_counts!(
                "coalesce(d.reviewed_at, d.updated_at)",
                "o.lead_id",
                "from documents d join loans o on o.id = d.loan_id
                 where d.review_decision = 'reject' and d.disposed_at is null",
                days
            )
            .fetch_one(conn)
            .await
        }
        "credit_reports_days" => credit_report_counts(conn, days).await,
        "notifications_days" => {
            rule_counts!(
                "n.created_at",
                "n.lead_id",
                "from notifications n where n.disposed_at is null",
                days
            )
            .fetch_one(conn)
            .await
        }
        _ => Ok(RuleCounts::default()),
    }
}

/// Credit reports are part of their application: counted from the later of the pull and the
/// final transition of the file's loans, only once every loan of the file is final, and —
/// where a loan closed — never before 3 years (Regulation Z keeps the ability-to-repay
/// evidence, 12 CFR 1026.25(c)(3)).
async fn credit_report_counts(
    conn: &mut PgConnection,
    days: i32,
) -> Result<RuleCounts, sqlx::Error> {
    sqlx::query_as!(
        RuleCounts,
        r#"with f as (
             select c.lead_id,
                    greatest(c.created_at,
                             (select max(s.at) from loan_status_history s join loans o on o.id = s.loan_id
                               where o.lead_id = c.lead_id
                                 and s.to_status in ('closed', 'denied', 'withdrawn'))) as at,
                    case when exists (select 1 from loans o where o.lead_id = c.lead_id and o.status = 'closed')
                         then greatest($1, 1096) else $1 end as keep
               from credit_reports c join leads l on l.id = c.lead_id
              where l.disposed_at is null
                and not exists (select 1 from loans o where o.lead_id = c.lead_id
                                   and o.status not in ('closed', 'denied', 'withdrawn'))
           )
           select
             count(*) filter (where f.at < now() - make_interval(days => f.keep)) as "due_now!",
             count(*) filter (where f.at >= now() - make_interval(days => f.keep)
                                and f.at < now() - make_interval(days => f.keep) + interval '30 days')
               as "due_next_30_days!",
             count(*) filter (where f.at < now() - make_interval(days => f.keep)
                                and exists (select 1 from legal_holds h
                                             where h.lead_id = f.lead_id and h.lifted_at is null))
               as "held!"
           from f"#,
        days
    )
    .fetch_one(conn)
    .await
}

/// The advisory lock that makes one disposal round run at a time across every replica.
const DISPOSAL_LOCK: i64 = 0x6c66_7265_7465_6e74; // "lfretent"

/// Take the disposal round's session-level lock on `conn`; false when another replica's
/// round holds it. Released by [`unlock_round`] or when the connection closes.
pub async fn try_lock_round(conn: &mut PgConnection) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar!(
        r#"select pg_try_advisory_lock($1) as "locked!""#,
        DISPOSAL_LOCK
    )
    .fetch_one(conn)
    .await
}

pub async fn unlock_round(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query_scalar!(
        r#"select pg_advisory_unlock($1) as "unlocked!""#,
        DISPOSAL_LOCK
    )
    .fetch_one(conn)
    .await?;
    Ok(())
}

/// The periods (days) the due-file query reads, from `[retention]`.
#[derive(Debug, Clone, Copy)]
pub struct Periods {
    pub leads_without_loan: i32,
    pub loans_closed: i32,
    pub loans_denied: i32,
    pub loans_withdrawn: i32,
    pub credit_reports: i32,
}

/// A borrower file past its periods: when each ended — the lead's own (last activity: a
/// change or a credit pull), its loans' (all final; `None` without a loan) and its credit
/// reports' (`None` without a pull) — and which loan status set the loans' date.
#[derive(Debug, Clone)]
pub struct DueFile {
    pub lead_id: Uuid,
    pub binding_status: Option<String>,
    pub lead_due: OffsetDateTime,
    pub loans_due: Option<OffsetDateTime>,
    pub credit_due: Option<OffsetDateTime>,
}

/// The due-file statement with `$loans` (the loans considered) and `$leads` (the leads
/// considered) spliced in; `$1`–`$5` are the periods (days), `$6` the moment.
macro_rules! due_files {
    ($loans:literal, $leads:literal $(, $arg:expr)* $(,)?) => {
        sqlx::query_as!(
            DueFile,
            r#"with loan_final as (
                 select o.lead_id,
                        bool_and(o.status in ('closed', 'denied', 'withdrawn')) as all_final,
                        bool_or(o.status = 'closed') as any_closed,
                        max(f.at) as last_final,
                        max(f.due) as loans_due,
                        (array_agg(o.status order by f.due desc))[1] as binding_status
                   from loans o
                   cross join lateral (
                     select x.at, x.at + make_interval(days => case o.status
                              when 'closed' then $2 when 'denied' then $3 when 'withdrawn' then $4
                              else 0 end) as due
                       from (select coalesce((select max(s.at) from loan_status_history s
                                               where s.loan_id = o.id and s.to_status = o.status),
                                             o.updated_at) as at) x
                   ) f
                  where "# + $loans + r#"
                  group by o.lead_id
               ), files as (
                 select l.id as lead_id, lf.binding_status, lf.loans_due,
                        (select max(c.created_at) from credit_reports c where c.lead_id = l.id)
                          as last_pull,
                        l.updated_at, lf.last_final, coalesce(lf.any_closed, false) as any_closed
                   from leads l left join loan_final lf on lf.lead_id = l.id
                  where l.disposed_at is null
                    and (lf.lead_id is null or lf.all_final)
                    and "# + $leads + r#"
                    and not exists (select 1 from legal_holds h
                                     where h.lead_id = l.id and h.lifted_at is null)
               ), dated as (
                 select lead_id, binding_status, loans_due,
                        greatest(updated_at, last_pull) + make_interval(days => $1) as lead_due,
                        greatest(last_pull, last_final)
                          + make_interval(days => case when any_closed then greatest($5, 1096)
                                                       else $5 end) as credit_due
                   from files
               )
               select lead_id as "lead_id!", binding_status, lead_due as "lead_due!",
                      loans_due, credit_due
                 from dated
                where greatest(lead_due, loans_due, credit_due) <= $6
                order by greatest(lead_due, loans_due, credit_due)
                limit $7"#
            $(, $arg)*
        )
    };
}

/// Up to `limit` borrower files due at `now` (every loan final and past its period, the
/// lead past its own, the credit reports past theirs), not disposed, not held and not in
/// `skip`, the earliest first.
pub async fn due_files(
    conn: &mut PgConnection,
    periods: Periods,
    now: OffsetDateTime,
    skip: &[Uuid],
    limit: i64,
) -> Result<Vec<DueFile>, sqlx::Error> {
    due_files!(
        "exists (select 1 from leads d where d.id = o.lead_id and d.disposed_at is null)",
        "l.id <> all($8)",
        periods.leads_without_loan,
        periods.loans_closed,
        periods.loans_denied,
        periods.loans_withdrawn,
        periods.credit_reports,
        now,
        limit,
        skip
    )
    .fetch_all(conn)
    .await
}

/// Of the files `leads`, those due at `now` (a disposal checks again under its locks).
pub async fn due_among(
    conn: &mut PgConnection,
    periods: Periods,
    now: OffsetDateTime,
    leads: &[Uuid],
) -> Result<Vec<DueFile>, sqlx::Error> {
    due_files!(
        "o.lead_id = any($8)",
        "l.id = any($8)",
        periods.leads_without_loan,
        periods.loans_closed,
        periods.loans_denied,
        periods.loans_withdrawn,
        periods.credit_reports,
        now,
        i64::try_from(leads.len()).unwrap_or(i64::MAX),
        leads
    )
    .fetch_all(conn)
    .await
}

/// Lock the lead of a hold about to be placed against a concurrent disposal (which locks it
/// `for update`); false when the file was disposed.
pub async fn lock_file_for_hold(tx: &mut PgConnection, lead: Uuid) -> Result<bool, sqlx::Error> {
    Ok(sqlx::query_scalar!(
        r#"select disposed_at is null as "live!" from leads where id = $1 for key share"#,
        lead
    )
    .fetch_optional(tx)
    .await?
    .unwrap_or(false))
}

/// One disposal in the database's record of them (ids, times and rule only).
pub struct NewDisposal<'a> {
    pub lead: Uuid,
    pub rule: &'a str,
    pub due_at: OffsetDateTime,
}

/// Disposals at `at`, recorded in the caller's transaction; they are in the outside ledger
/// already (appended before this commits, or replayed from it).
pub async fn record_disposals(
    tx: &mut PgConnection,
    disposals: &[NewDisposal<'_>],
    at: OffsetDateTime,
    replayed: bool,
) -> Result<(), sqlx::Error> {
    let leads: Vec<Uuid> = disposals.iter().map(|d| d.lead).collect();
    let rules: Vec<String> = disposals.iter().map(|d| d.rule.to_owned()).collect();
    let due: Vec<OffsetDateTime> = disposals.iter().map(|d| d.due_at).collect();
    sqlx::query!(
        "insert into disposals (lead_id, rule, due_at, disposed_at, replayed, ledgered_at)
         select lead, rule, due, $4, $5, now()
           from unnest($1::uuid[], $2::text[], $3::timestamptz[]) as d(lead, rule, due)",
        &leads,
        &rules,
        &due,
        at,
        replayed
    )
    .execute(tx)
    .await?;
    Ok(())
}

/// Disposed files whose objects are not yet all deleted.
pub async fn objects_pending(conn: &mut PgConnection) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar!(
        "select lead_id from disposals where objects_deleted_at is null order by disposed_at"
    )
    .fetch_all(conn)
    .await
}

pub async fn mark_objects_deleted(
    conn: &mut PgConnection,
    leads: &[Uuid],
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "update disposals set objects_deleted_at = now() where lead_id = any($1)",
        leads
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Disposal: the file's lifted holds keep who and when, not their sealed reasons.
pub async fn blank_holds(tx: &mut PgConnection, leads: &[Uuid]) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "update legal_holds set reason_enc = '\\x', reference_enc = null where lead_id = any($1)",
        leads
    )
    .execute(tx)
    .await?;
    Ok(())
}

/// What backups may still hold of disposed files: those disposed with a key wrapped under a
/// master version the last key epoch did not retire, the oldest such disposal, and when the
/// last epoch ended.
#[derive(Debug)]
pub struct BackupExposure {
    pub still_in_backups: i64,
    pub oldest_disposal: Option<OffsetDateTime>,
    pub last_epoch_at: Option<OffsetDateTime>,
}

pub async fn backup_exposure(conn: &mut PgConnection) -> Result<BackupExposure, sqlx::Error> {
    sqlx::query_as!(
        BackupExposure,
        r#"with epoch as (select max(retired_below) as below, max(retired_at) as at from key_epochs)
           select count(d.lead_id) as "still_in_backups!", min(d.disposed_at) as oldest_disposal,
                  (select at from epoch) as last_epoch_at
             from disposals d join borrower_files f on f.id = d.lead_id
            where f.kek_version >= coalesce((select below from epoch), 0)"#
    )
    .fetch_one(conn)
    .await
}
