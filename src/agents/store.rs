//! The agents list's SQL (provisioning at sign-in and the disabled flag are `crate::auth`'s).

use time::OffsetDateTime;

/// An agent as the list shows it.
pub struct AgentRow {
    pub subject: String,
    pub display_name: String,
    pub email: Option<String>,
    pub roles: Vec<String>,
    pub team: Option<String>,
    pub disabled_at: Option<OffsetDateTime>,
    pub first_seen_at: OffsetDateTime,
    pub last_seen_at: OffsetDateTime,
}

/// Up to `fetch` agents after `after` (by subject) — of `team`, or every agent when `None`
/// (one static statement each: the team's list has its own plan).
pub async fn page(
    db: &sqlx::PgPool,
    team: Option<&str>,
    after: Option<&str>,
    fetch: i64,
) -> Result<Vec<AgentRow>, sqlx::Error> {
    match team {
        Some(team) => {
            sqlx::query_as!(
                AgentRow,
                "select subject, display_name, email, roles, team, disabled_at, first_seen_at,
                        last_seen_at
                   from agents where team = $1 and ($2::text is null or subject > $2)
                  order by subject limit $3",
                team,
                after,
                fetch
            )
            .fetch_all(db)
            .await
        }
        None => {
            sqlx::query_as!(
                AgentRow,
                "select subject, display_name, email, roles, team, disabled_at, first_seen_at,
                        last_seen_at
                   from agents where ($1::text is null or subject > $1)
                  order by subject limit $2",
                after,
                fetch
            )
            .fetch_all(db)
            .await
        }
    }
}
