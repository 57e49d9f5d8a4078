//! PostgreSQL: the pool, the embedded migrations and the schema-version check.
//!
//! Only `loanfolio migrate` changes the schema. `serve` and `worker` compare the database
//! with the migrations compiled into them and stay not-ready until it has every one of
//! them; a database *ahead* of the binary is fine (expand/contract: the previous release
//! keeps serving while the next one migrates).

use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use secrecy::ExposeSecret;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

use crate::config::DatabaseSettings;

pub mod migration_check;
pub mod outbox;

pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// The newest migration this binary was built with.
pub fn expected_version() -> i64 {
    MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0)
}

pub fn connect_options(settings: &DatabaseSettings) -> anyhow::Result<PgConnectOptions> {
    let url = settings.url()?;
    // sqlx's parse error can quote the URL; say only that it is malformed.
    let options = PgConnectOptions::from_str(url.expose_secret())
        .map_err(|_| anyhow::anyhow!("database.url is not a valid PostgreSQL URL"))?;
    let mut options = options.application_name("loanfolio").options([(
        "statement_timeout",
        settings.statement_timeout_ms.to_string(),
    )]);
    if let Some(mode) = &settings.ssl_mode {
        options = options.ssl_mode(
            mode.parse()
                .map_err(|_| anyhow::anyhow!("database.ssl_mode {mode} is not a libpq sslmode"))?,
        );
    } else if settings.ca_file.is_some() {
        // A CA bundle is configured to be checked: `prefer` would check nothing.
        options = options.ssl_mode(sqlx::postgres::PgSslMode::VerifyFull);
    }
    if let Some(ca) = &settings.ca_file {
        crate::tls::read_ca("database.ca_file", ca)?;
        options = options.ssl_root_cert(ca);
    }
    Ok(options)
}

/// A pool that connects on first use, so the service starts (not ready) while PostgreSQL is
/// down and becomes ready when it comes back.
pub fn lazy_pool(settings: &DatabaseSettings) -> anyhow::Result<PgPool> {
    Ok(PgPoolOptions::new()
        .max_connections(settings.max_connections)
        .min_connections(settings.min_connections)
        .acquire_timeout(settings.acquire_timeout())
        .idle_timeout(Some(Duration::from_secs(settings.idle_timeout_secs)))
        .connect_lazy_with(connect_options(settings)?))
}

/// Where the database stands against the migrations compiled into this binary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SchemaState {
    Current {
        version: i64,
    },
    /// Migrations of this binary are missing from the database.
    Behind {
        applied: i64,
        expected: i64,
        pending: Vec<i64>,
    },
    /// A migration was applied with different contents than this binary carries.
    Modified {
        version: i64,
    },
    /// A migration started but did not finish (`success = false`).
    Dirty {
        version: i64,
    },
}

impl SchemaState {
    pub fn is_ready(&self) -> bool {
        matches!(self, SchemaState::Current { .. })
    }

    pub fn describe(&self) -> String {
        match self {
            SchemaState::Current { version } => format!("schema at version {version}"),
            SchemaState::Behind {
                applied,
                expected,
                pending,
            } => format!(
                "schema at version {applied}, this release needs {expected} ({} pending migration(s)); run `loanfolio migrate`",
                pending.len()
            ),
            SchemaState::Modified { version } => format!(
                "migration {version} in the database differs from this release's; restore it or deploy the matching release"
            ),
            SchemaState::Dirty { version } => format!(
                "migration {version} did not complete; fix it and re-run `loanfolio migrate`"
            ),
        }
    }
}

/// The versions recorded as applied (none on an empty database).
pub async fn applied_versions(pool: &PgPool) -> anyhow::Result<Vec<i64>> {
    let table_exists: bool = sqlx::query_scalar!(
        r#"select to_regclass('public._sqlx_migrations') is not null as "exists!""#
    )
    .fetch_one(pool)
    .await
    .context("reading the migration table")?;
    if !table_exists {
        return Ok(Vec::new());
    }
    sqlx::query_scalar!("select version from _sqlx_migrations where success order by version")
        .fetch_all(pool)
        .await
        .context("reading the migration table")
}

/// Compare the applied migrations with the embedded ones. Read-only.
pub async fn schema_state(pool: &PgPool) -> anyhow::Result<SchemaState> {
    let table_exists: bool = sqlx::query_scalar!(
        r#"select to_regclass('public._sqlx_migrations') is not null as "exists!""#
    )
    .fetch_one(pool)
    .await
    .context("reading the migration table")?;
    let applied = if table_exists {
        sqlx::query_as!(
            Applied,
            "select version, success, checksum from _sqlx_migrations order by version"
        )
        .fetch_all(pool)
        .await
        .context("reading the migration table")?
    } else {
        Vec::new()
    };
    Ok(compare(&applied))
}

/// A migration as `_sqlx_migrations` records it.
struct Applied {
    version: i64,
    success: bool,
    checksum: Vec<u8>,
}

fn compare(applied: &[Applied]) -> SchemaState {
    if let Some(failed) = applied.iter().find(|m| !m.success) {
        return SchemaState::Dirty {
            version: failed.version,
        };
    }
    let mut pending = Vec::new();
    for migration in MIGRATOR
        .iter()
        .filter(|m| m.migration_type.is_up_migration())
    {
        match applied.iter().find(|m| m.version == migration.version) {
            Some(m) if m.checksum.as_slice() != &*migration.checksum => {
                return SchemaState::Modified {
                    version: migration.version,
                };
            }
            Some(_) => {}
            None => pending.push(migration.version),
        }
    }
    let newest_applied = applied.iter().map(|m| m.version).max().unwrap_or(0);
    if pending.is_empty() {
        SchemaState::Current {
            version: newest_applied,
        }
    } else {
        SchemaState::Behind {
            applied: newest_applied,
            expected: expected_version(),
            pending,
        }
    }
}

/// Apply pending migrations. sqlx takes a PostgreSQL advisory lock for the run, so two
/// `loanfolio migrate` processes (two Ansible hosts, say) cannot interleave.
pub async fn migrate(pool: &PgPool) -> anyhow::Result<()> {
    MIGRATOR.run(pool).await.context("applying migrations")?;
    Ok(())
}

/// Make the transaction a read-only snapshot: every later statement in it sees the same data.
pub async fn read_only_snapshot(tx: &mut sqlx::PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query!("set transaction isolation level repeatable read, read only")
        .execute(tx)
        .await?;
    Ok(())
}

/// Keyset pagination: the query fetched `limit + 1` rows; keep `limit` and say where the
/// next page starts (`None` on the last page).
pub fn next_page<T>(
    rows: &mut Vec<T>,
    limit: i64,
    cursor_of: impl Fn(&T) -> String,
) -> Option<String> {
    if rows.len() as i64 > limit {
        rows.truncate(limit as usize);
        rows.last().map(cursor_of)
    } else {
        None
    }
}

/// A validated page request: how many, and after which item.
pub struct Page<C> {
    pub limit: i64,
    pub after: Option<C>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_applied() -> Vec<Applied> {
        MIGRATOR
            .iter()
            .map(|m| Applied {
                version: m.version,
                success: true,
                checksum: m.checksum.to_vec(),
            })
            .collect()
    }

    #[test]
    fn empty_database_is_behind() {
        let state = compare(&[]);
        assert!(
            matches!(state, SchemaState::Behind { applied: 0, .. }),
            "{state:?}"
        );
        assert!(!state.is_ready());
        assert!(state.describe().contains("loanfolio migrate"));
    }

    #[test]
    fn all_applied_is_current() {
        assert_eq!(
            compare(&all_applied()),
            SchemaState::Current {
                version: expected_version()
            }
        );
    }

    #[test]
    fn newer_database_is_still_current() {
        let mut applied = all_applied();
        applied.push(Applied {
            version: expected_version() + 1,
            success: true,
            checksum: vec![1, 2, 3],
        });
        assert!(compare(&applied).is_ready());
    }

    #[test]
    fn changed_checksum_and_failed_runs_are_not_ready() {
        let mut applied = all_applied();
        applied[0].checksum = vec![0; 48];
        assert!(matches!(compare(&applied), SchemaState::Modified { .. }));
        let mut applied = all_applied();
        applied[0].success = false;
        assert!(matches!(compare(&applied), SchemaState::Dirty { .. }));
    }
}
