//! The command line: `dockhand serve` and `dockhand check`.

use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};

use crate::config::{redact_url, Config, TokenScope};

/// dockhand: signed GitHub pushes become fast in-place or full container deploys.
#[derive(Debug, Parser)]
#[command(version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the webhook server.
    Serve {
        /// Path to the TOML config.
        #[arg(long, short, env = "DOCKHAND_CONFIG", default_value = "dockhand.toml")]
        config: PathBuf,
    },
    /// Validate a config and print what each app tracks and where it deploys.
    Check {
        /// Path to the TOML config.
        #[arg(long, short, env = "DOCKHAND_CONFIG", default_value = "dockhand.toml")]
        config: PathBuf,
    },
}

/// `dockhand check`: the report for a valid config (errors are returned for `main` to print).
pub fn check_report(path: &Path) -> anyhow::Result<String> {
    use std::fmt::Write;
    let (config, warnings) = Config::load(path)?;
    let problems = crate::hooks::problems(&config);
    if !problems.is_empty() {
        anyhow::bail!(
            "invalid hooks in {}: {}",
            path.display(),
            problems.join("; ")
        );
    }
    let hooks = crate::hooks::inventory(&config);
    let mut out = String::new();
    let s = &config.server;
    let _ = writeln!(out, "config ok: {}", path.display());
    let _ = writeln!(
        out,
        "server: listen {}, state in {}, body limit {} bytes",
        s.listen,
        s.state_dir.display(),
        s.body_limit
    );
    if let Some(dir) = &s.hooks_dir {
        let _ = writeln!(
            out,
            "hooks: from {} (each at most {:?} unless the app says)",
            dir.display(),
            s.hook_timeout
        );
    }
    for app in &config.apps {
        let reload = app.reload.to_string();
        let _ = writeln!(out, "app {}", app.name);
        let _ = writeln!(
            out,
            "  tracks   {} ({}), {}",
            app.repository_label(),
            redact_url(&app.repo),
            app.tracking_label()
        );
        let _ = writeln!(
            out,
            "  deploys  into {} (fast path), reload: {reload}",
            app.volume.display()
        );
        let app_hooks: Vec<String> = hooks
            .iter()
            .filter(|(name, ..)| *name == app.name)
            .map(|(_, stage, path, _)| format!("{stage} {}", path.display()))
            .collect();
        if !app_hooks.is_empty() {
            let _ = writeln!(out, "  hooks    {}", app_hooks.join(", "));
        }
        if let Some(c) = &app.container {
            let _ = writeln!(
                out,
                "  full     image {}, mounted at {}, health http://127.0.0.1:$PORT{} within {:?}",
                c.image, c.mount, c.health_path, c.health_deadline
            );
        }
        if !app.lock_on_rollback {
            let _ = writeln!(
                out,
                "  rollback does not lock the app (lock_on_rollback = false)"
            );
        }
        let _ = writeln!(
            out,
            "  webhook  POST /hooks/github/{} (or /hooks/github)",
            app.name
        );
    }
    if config.tokens.is_empty() {
        let _ = writeln!(
            out,
            "api: no [[tokens]]: reads are open, deploy/rollback/plan/lock answer 401"
        );
    }
    for t in &config.tokens {
        let apps = match &t.scope {
            TokenScope::All => "every app".to_string(),
            TokenScope::Apps(apps) => apps.join(", "),
        };
        let _ = writeln!(out, "token {} (redacted) for {apps}", t.name);
    }
    for w in warnings {
        let _ = writeln!(out, "warning: {w}");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_lists_tokens_with_their_scope_and_never_their_value() {
        let dir = tempfile::tempdir().unwrap();
        let token = "check-token-0123456789abcdef";
        std::fs::write(dir.path().join("token"), token).unwrap();
        let config = dir.path().join("dockhand.toml");
        std::fs::write(
            &config,
            "[server]\nstate_dir = \"state\"\n\
             [[apps]]\nname = \"web\"\nrepo = \"/srv/web.git\"\nsecret = \"s3cret\"\nvolume = \"volume\"\n\
             lock_on_rollback = false\n\
             [[tokens]]\nname = \"ci\"\ntoken_file = \"token\"\napps = [\"web\"]\n",
        )
        .unwrap();
        let report = check_report(&config).unwrap();
        assert!(report.contains("token ci (redacted) for web"), "{report}");
        assert!(report.contains("rollback does not lock"), "{report}");
        assert!(!report.contains(token), "{report}");
    }
}
