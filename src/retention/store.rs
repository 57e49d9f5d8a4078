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

/// Whether the borrower file `lead` is under a hold in force.
pub async fn file_is_held(conn: &mut PgConnection, lead: Uuid) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar!(
        r#"select exists (select 1 from legal_holds where lead_id = $1 and lifted_at is null) as "held!""#,
        lead
    )
    .fetch_one(conn)
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
                        where not exists (select 1 from loans o where o.lead_id = l.id)) f",
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
                         from loans o where o.status = $2) f",
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
                "d.updated_at",
                "o.lead_id",
                "from documents d join loans o on o.id = d.loan_id
                 where d.review_decision = 'reject'",
                days
            )
            .fetch_one(conn)
            .await
        }
        "credit_reports_days" => credit_report_counts(conn, days).await,
        "notifications_days" => {
            rule_counts!("n.created_at", "n.lead_id", "from notifications n", days)
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
               from credit_reports c
              where not exists (select 1 from loans o where o.lead_id = c.lead_id
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
