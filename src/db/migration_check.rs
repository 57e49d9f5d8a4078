//! `loanfolio migrate --check`: is a pending migration safe to run while the previous
//! release still serves? The expand/contract policy (docs/operations/upgrades.md) allows a
//! release only *expanding* steps; this finds the steps that break the old binary or lose
//! data: dropping or renaming a table or column, truncating, changing a column's type,
//! making a column NOT NULL, or adding a NOT NULL column without a default.
//!
//! A lexical check of PostgreSQL DDL, not a parser: comments and dollar-quoted bodies
//! (functions) are removed first, then each statement and each `alter table` clause is
//! matched. It errs towards flagging.

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The offending statement, shortened.
    pub statement: String,
    pub reason: &'static str,
}

/// Lower-cased statements without comments, whitespace collapsed; each dollar-quoted body
/// is replaced by `$body<n>$` and returned apart (a function's body runs later, a DO
/// block's now).
fn statements(sql: &str) -> (Vec<String>, Vec<String>) {
    let mut bodies = Vec::new();
    let mut out = String::with_capacity(sql.len());
    let bytes = sql.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let rest = &sql[i..];
        if rest.starts_with("--") {
            i += rest.find('\n').unwrap_or(rest.len());
        } else if rest.starts_with("/*") {
            i += rest.find("*/").map_or(rest.len(), |e| e + 2);
        } else if let Some(literal) = rest.strip_prefix('\'') {
            // A string literal: keep it as a placeholder so `;` inside it cannot split.
            let end = literal.find('\'').map_or(rest.len(), |e| e + 2);
            out.push_str("''");
            i += end;
        } else if let Some(tag) = dollar_tag(rest) {
            let body_end = rest[tag.len()..]
                .find(tag)
                .map_or(rest.len(), |e| e + 2 * tag.len());
            let body = rest
                .get(tag.len()..body_end.saturating_sub(tag.len()))
                .unwrap_or("");
            out.push_str(&format!(" $body{}$ ", bodies.len()));
            bodies.push(body.to_owned());
            i += body_end;
        } else {
            let c = rest.chars().next().unwrap_or(' ');
            out.push(c);
            i += c.len_utf8();
        }
    }
    let statements = out
        .split(';')
        .map(|s| {
            s.split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
                .to_lowercase()
        })
        .filter(|s| !s.is_empty())
        .collect();
    (statements, bodies)
}

/// `$$` or `$tag$` at the start of `s`.
fn dollar_tag(s: &str) -> Option<&str> {
    let rest = s.strip_prefix('$')?;
    let end = rest.find('$')?;
    rest[..end]
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_')
        .then(|| &s[..end + 2])
}

/// The clauses of `alter table x <clauses>`, split on commas outside parentheses.
fn clauses(body: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut depth, mut start) = (0i32, 0);
    for (i, c) in body.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(body[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(body[start..].trim());
    out
}

fn has_word(text: &str, word: &str) -> bool {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .any(|w| w == word)
}

fn check_clause(clause: &str) -> Option<&'static str> {
    if clause.contains("rename") {
        return Some("renames a table, column or constraint the running release still uses");
    }
    if let Some(dropped) = clause.strip_prefix("drop ") {
        let first = dropped.split(' ').next().unwrap_or("");
        return match first {
            "constraint" | "default" | "not" | "expression" | "identity" => None,
            _ => Some("drops a column the running release may still read or write"),
        };
    }
    if clause.starts_with("alter ") {
        if clause.contains(" type ") || clause.contains(" set data type ") {
            return Some(
                "changes a column's type (rewrites the table; the running release may break)",
            );
        }
        if clause.contains("set not null") {
            return Some("makes a column NOT NULL: the running release may still write nulls");
        }
        return None;
    }
    if let Some(added) = clause.strip_prefix("add ") {
        let first = added.split(' ').next().unwrap_or("");
        if matches!(
            first,
            "constraint" | "primary" | "unique" | "foreign" | "check" | "exclude"
        ) {
            // A new uniqueness rule can refuse the running release's writes. (A foreign key
            // or check constraint is validated against existing rows only; add it NOT VALID
            // and VALIDATE it separately on big tables — upgrades.md.)
            if has_word(clause, "unique")
                || clause.contains("primary key")
                || has_word(clause, "exclude")
            {
                return Some(
                    "adds a uniqueness constraint: the running release's writes may be refused",
                );
            }
            return None;
        }
        if clause.contains("not null")
            && !has_word(clause, "default")
            && !clause.contains("generated")
        {
            return Some(
                "adds a NOT NULL column without a default: the running release's inserts fail",
            );
        }
    }
    None
}

/// Every step of `sql` that the previous release cannot run beside.
pub fn analyse(sql: &str) -> Vec<Finding> {
    let mut findings = Vec::new();
    let (statements, bodies) = statements(sql);
    for statement in statements {
        let short: String = statement.chars().take(120).collect();
        let mut flag = |reason| {
            findings.push(Finding {
                statement: short.clone(),
                reason,
            })
        };
        let destructive_prefixes = [
            ("drop table", "drops a table"),
            ("drop view", "drops a view"),
            ("drop materialized view", "drops a materialized view"),
            ("drop schema", "drops a schema"),
            ("drop type", "drops a type columns may use"),
            ("truncate", "deletes every row of a table"),
        ];
        if let Some((_, reason)) = destructive_prefixes
            .iter()
            .find(|(p, _)| statement.starts_with(p))
        {
            flag(reason);
            continue;
        }
        // A DO block runs now: its static statements are judged like any other; dynamic
        // SQL (`execute`) cannot be, so a human has to.
        if statement.starts_with("do ") {
            let body = statement
                .split("$body")
                .nth(1)
                .and_then(|rest| rest.split('$').next())
                .and_then(|n| n.parse::<usize>().ok())
                .and_then(|n| bodies.get(n));
            match body {
                Some(body) if !has_word(&body.to_lowercase(), "execute") => {
                    // PL/pgSQL control words start statements too: `then drop table t`.
                    let split: Vec<&str> = body
                        .split_whitespace()
                        .map(|w| match w.to_lowercase().as_str() {
                            "begin" | "then" | "else" | "loop" | "declare" | "exception" => ";",
                            _ => w,
                        })
                        .collect();
                    findings.extend(analyse(&split.join(" ")));
                }
                _ => flag("runs dynamic SQL in a DO block (unjudgeable): review it by hand"),
            }
            continue;
        }
        if let Some(rest) = statement.strip_prefix("alter table ") {
            // Skip `only`, `if exists` and the table's name.
            let rest = rest.strip_prefix("if exists ").unwrap_or(rest);
            let rest = rest.strip_prefix("only ").unwrap_or(rest);
            let Some((_, body)) = rest.split_once(' ') else {
                continue;
            };
            for clause in clauses(body) {
                if let Some(reason) = check_clause(clause) {
                    flag(reason);
                }
            }
        }
    }
    findings
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reasons(sql: &str) -> usize {
        analyse(sql).len()
    }

    #[test]
    fn expanding_steps_pass() {
        for sql in [
            "create table t (id uuid primary key, name text not null)",
            "alter table t add column note text",
            "alter table t add column n integer not null default 0, add column at timestamptz",
            "alter table t add constraint t_fk foreign key (x) references u (id)",
            "alter table t add constraint t_fk foreign key (x) references u (id) not valid",
            "create index t_idx on t (name) where state in ('a', 'b')",
            "alter table t alter column n drop not null",
            "alter table t alter column n set default 1",
            "create trigger no_truncate before truncate on t for each statement execute function f()",
            "-- drop table t\ncreate table u (id int)",
            "create function f() returns trigger language plpgsql as $$ begin drop table x; end; $$",
            "comment on table t is 'we will drop table t; later'",
        ] {
            assert_eq!(analyse(sql), Vec::new(), "{sql}");
        }
    }

    #[test]
    fn destructive_steps_are_flagged() {
        for sql in [
            "drop table t",
            "DROP TABLE IF EXISTS t",
            "truncate t",
            "alter table t drop column name",
            "alter table t drop name",
            "alter table t rename column a to b",
            "alter table t rename to u",
            "alter table t alter column n type bigint",
            "alter table t alter column n set not null",
            "alter table t add column n integer not null",
            "alter table if exists only t add column n text NOT NULL",
            "drop view v",
            "do $$ begin execute 'alter table t drop column x'; end $$",
            "do $$ begin if true then drop table t; end if; end $$",
            "alter table t add constraint t_email_key unique (email)",
            "alter table t add primary key (id)",
        ] {
            assert_eq!(reasons(sql), 1, "{sql}");
        }
        assert_eq!(
            reasons("alter table t add column a text, drop column b, rename column c to d"),
            2
        );
    }

    #[test]
    fn the_projects_migrations_are_all_expanding() {
        for migration in crate::db::MIGRATOR.iter() {
            assert_eq!(
                analyse(migration.sql.as_str()),
                Vec::new(),
                "{} {}",
                migration.version,
                migration.description
            );
        }
    }

    #[test]
    fn the_unsafe_fixture_is_refused() {
        let sql = include_str!(
            "../../tests/fixtures/unsafe-migrations/20991231000000_unsafe_contract.sql"
        );
        let found = analyse(sql);
        assert!(found.len() >= 3, "{found:#?}");
    }
}
