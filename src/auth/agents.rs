//! Agents are provisioned just in time from their claims. The upsert runs on first sight
//! and then only when the claims change or every few minutes, so authentication does not
//! cost a database write per request.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sqlx::PgPool;

use super::Actor;

const REFRESH_AFTER: Duration = Duration::from_secs(300);

#[derive(Debug, Default)]
pub struct Provisioned(Mutex<HashMap<String, (u64, Instant)>>);

fn fingerprint(actor: &Actor) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    actor.display_name.hash(&mut hasher);
    actor.email.hash(&mut hasher);
    actor.team.hash(&mut hasher);
    actor.roles.hash(&mut hasher);
    hasher.finish()
}

impl Provisioned {
    pub async fn ensure(&self, db: &PgPool, actor: &Actor) -> Result<(), sqlx::Error> {
        let print = fingerprint(actor);
        {
            let seen = self.0.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((known, at)) = seen.get(&actor.subject)
                && *known == print
                && at.elapsed() < REFRESH_AFTER
            {
                return Ok(());
            }
        }
        let roles: Vec<String> = actor.roles.iter().map(|r| r.as_str().to_owned()).collect();
        // language=PostgreSQL
        sqlx::query(
            "insert into agents (subject, display_name, email, team, roles)
             values ($1, $2, $3, $4, $5)
             on conflict (subject) do update
                set display_name = excluded.display_name,
                    email = excluded.email,
                    team = excluded.team,
                    roles = excluded.roles,
                    last_seen_at = now()",
        )
        .bind(&actor.subject)
        .bind(&actor.display_name)
        .bind(&actor.email)
        .bind(&actor.team)
        .bind(&roles)
        .execute(db)
        .await?;
        let mut seen = self.0.lock().unwrap_or_else(|p| p.into_inner());
        seen.insert(actor.subject.clone(), (print, Instant::now()));
        Ok(())
    }
}
