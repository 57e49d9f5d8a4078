use super::*;

/// The secrets `config/default.toml` deliberately leaves unset.
fn set_required_secrets(jail: &mut figment::Jail) {
    jail.set_env("LOANFOLIO__DATABASE__URL", "postgres://u@h/db");
    jail.set_env("LOANFOLIO__RABBITMQ__URL", "amqp://u:p@h:5672/%2f");
    jail.set_env("LOANFOLIO__REDIS__URL", "redis://h:6379/0");
    jail.set_env("LOANFOLIO__S3__SECRET_ACCESS_KEY", "s3-secret");
}

fn load(jail_extra: Option<&str>) -> Result<Settings, ConfigError> {
    Settings::load_from(
        jail_extra.map(Path::new),
        Env::prefixed(ENV_PREFIX).split("__"),
    )
}

#[test]
fn defaults_need_only_the_secrets() {
    figment::Jail::expect_with(|jail| {
        let err = load(None).expect_err("no database url");
        assert!(err.to_string().contains("database.url"), "{err}");
        set_required_secrets(jail);
        let settings = load(None).expect("defaults plus secrets are valid");
        assert_eq!(settings.kms.provider, KmsProvider::Local);
        Ok(())
    });
}

#[test]
fn unknown_key_is_named() {
    figment::Jail::expect_with(|jail| {
        set_required_secrets(jail);
        jail.set_env("LOANFOLIO__DATABASE__MAX_CONECTIONS", "5");
        let err = load(None).expect_err("typo must fail");
        let message = err.to_string();
        assert!(message.contains("max_conections"), "{message}");
        Ok(())
    });
}

#[test]
fn env_overrides_file() {
    figment::Jail::expect_with(|jail| {
        set_required_secrets(jail);
        jail.set_env("LOANFOLIO__SERVER__REQUEST_TIMEOUT_SECS", "7");
        let settings = load(None).unwrap();
        assert_eq!(settings.server.request_timeout_secs, 7);
        Ok(())
    });
}

#[test]
fn secret_from_file_but_not_both() {
    figment::Jail::expect_with(|jail| {
        set_required_secrets(jail);
        jail.create_file("db-url", "postgres://u:file-secret@h/db\n")?;
        jail.set_env("LOANFOLIO__DATABASE__URL_FILE", "db-url");
        let err = load(None).expect_err("both given");
        assert!(err.to_string().contains("database.url"), "{err}");
        Ok(())
    });
    figment::Jail::expect_with(|jail| {
        set_required_secrets(jail);
        jail.set_env("LOANFOLIO__DATABASE__URL", "");
        jail.create_file("db-url", "postgres://u:file-secret@h/db\n")?;
        jail.create_file("site.toml", "[database]\nurl_file = \"db-url\"\n")?;
        let err = load(Some("site.toml")).expect_err("empty inline and a file");
        assert!(err.to_string().contains("database.url"), "{err}");
        Ok(())
    });
    figment::Jail::expect_with(|jail| {
        set_required_secrets(jail);
        jail.clear_env();
        jail.set_env("LOANFOLIO__RABBITMQ__URL", "amqp://u:p@h:5672/%2f");
        jail.set_env("LOANFOLIO__REDIS__URL", "redis://h:6379/0");
        jail.set_env("LOANFOLIO__S3__SECRET_ACCESS_KEY", "s3-secret");
        jail.create_file("db-url", "postgres://u:file-secret@h/db\n")?;
        jail.create_file("site.toml", "[database]\nurl_file = \"db-url\"\n")?;
        let settings = load(Some("site.toml")).unwrap();
        assert_eq!(
            settings.database.url().unwrap().expose_secret(),
            "postgres://u:file-secret@h/db"
        );
        Ok(())
    });
}

/// Defect: an empty inline webhook secret was accepted — an HMAC anyone can compute.
#[test]
fn empty_webhook_secrets_are_refused_at_start() {
    figment::Jail::expect_with(|jail| {
        set_required_secrets(jail);
        jail.create_file("site.toml", "[los]\nwebhook_secrets = [\"ok\", \"\"]\n")?;
        let err = load(Some("site.toml")).expect_err("an empty secret");
        assert!(err.to_string().contains("los.webhook_secrets"), "{err}");
        jail.create_file("site.toml", "[los]\nwebhook_secrets = [\"ok\"]\n")?;
        assert!(load(Some("site.toml")).is_ok());
        Ok(())
    });
}

#[test]
fn secrets_never_in_debug() {
    figment::Jail::expect_with(|jail| {
        set_required_secrets(jail);
        jail.set_env(
            "LOANFOLIO__DATABASE__URL",
            "postgres://u:canary-pw-123@h/db",
        );
        let settings = load(None).unwrap();
        let debug = format!("{settings:?}");
        assert!(!debug.contains("canary-pw-123"), "{debug}");
        Ok(())
    });
}

#[test]
fn disposal_needs_its_ledger_and_a_key_epoch_of_sane_length() {
    figment::Jail::expect_with(|jail| {
        set_required_secrets(jail);
        jail.set_env("LOANFOLIO__RETENTION__ENABLED", "true");
        let err = load(None).expect_err("disposal without a ledger");
        assert!(err.to_string().contains("retention.ledger_path"), "{err}");
        jail.set_env(
            "LOANFOLIO__RETENTION__LEDGER_PATH",
            "/var/lib/loanfolio/ledger.jsonl",
        );
        assert!(load(None).is_ok());
        for bad in ["0", "3651"] {
            jail.set_env("LOANFOLIO__RETENTION__KEY_EPOCH_DAYS", bad);
            let err = load(None).expect_err("key epoch out of range");
            assert!(
                err.to_string().contains("retention.key_epoch_days"),
                "{err}"
            );
        }
        Ok(())
    });
}

#[test]
fn retention_periods_may_lengthen_but_never_go_below_their_legal_floor() {
    figment::Jail::expect_with(|jail| {
        set_required_secrets(jail);
        let defaults = load(None).unwrap();
        for rule in RETENTION_RULES {
            assert!(
                defaults.retention.days(rule.rule) >= rule.floor_days,
                "the default of {} is at or above its floor",
                rule.rule
            );
        }
        jail.set_env("LOANFOLIO__RETENTION__LOANS_CLOSED_DAYS", "4000");
        assert_eq!(load(None).unwrap().retention.loans_closed_days, 4000);
        for (key, short) in [
            ("LEADS_WITHOUT_LOAN_DAYS", "762"),
            ("LOANS_DENIED_DAYS", "400"),
            ("LOANS_CLOSED_DAYS", "1826"),
            ("CREDIT_REPORTS_DAYS", "30"),
        ] {
            jail.set_env(format!("LOANFOLIO__RETENTION__{key}"), short);
            let err = load(None).expect_err("below the floor");
            assert!(
                err.to_string()
                    .contains(&format!("retention.{}", key.to_lowercase())),
                "{err}"
            );
            jail.set_env(format!("LOANFOLIO__RETENTION__{key}"), "4000");
        }
        jail.set_env("LOANFOLIO__RETENTION__NOTIFICATIONS_DAYS", "0");
        assert!(load(None).is_ok(), "no floor for notifications");
        jail.set_env("LOANFOLIO__RETENTION__NOTIFICATIONS_DAYS", "36501");
        let err = load(None).expect_err("more than a hundred years cannot be dated");
        assert!(
            err.to_string().contains("retention.notifications_days"),
            "{err}"
        );
        Ok(())
    });
}
