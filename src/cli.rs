//! The command line: `dockhand serve` and `dockhand check` run here; the client commands
//! (`deploy`, `rollback`, `promote`, `plan`, `history`, `logs`, `lock`, `unlock`, `status`,
//! `maintenance`) talk to a running server (`crate::client`).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::config::{AppConfig, Config, TokenScope};
use crate::redact::redact_url;

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
    /// Re-read the config of the dockhand running on its state directory: a new process takes
    /// over the listening sockets (no connection refused), the old one drains and exits. An
    /// invalid config is refused and the running one keeps serving.
    Reload {
        /// Path to the TOML config.
        #[arg(long, short, env = "DOCKHAND_CONFIG", default_value = "dockhand.toml")]
        config: PathBuf,
    },
    /// What dockhand's Swarm jobs run on each node of a service with `[apps.swarm] code_dir`:
    /// build a commit's release in the node's code directory, or switch `current` to one.
    #[command(subcommand)]
    Node(NodeCommand),
    #[command(flatten)]
    Client(ClientCommand),
}

/// `dockhand node …`: one node's side of a fast deploy across a swarm (phase 1 builds on
/// every node, phase 2 switches on every node once all have built).
#[derive(Debug, Subcommand)]
pub enum NodeCommand {
    /// Fetch REF from REPO into DIR's cache (unless COMMIT is there) and build
    /// DIR/releases/COMMIT from the live release; `current` stays as it is.
    Build {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        repo: String,
        #[arg(long = "ref")]
        git_ref: String,
        #[arg(long)]
        commit: String,
        /// A file holding the HTTPS token for REPO (a Swarm secret under /run/secrets).
        #[arg(long)]
        token_file: Option<PathBuf>,
    },
    /// Point DIR/current at COMMIT's release, then touch TOUCH (relative) in it.
    Switch {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        commit: String,
        #[arg(long)]
        touch: Option<PathBuf>,
    },
}

/// Where the server is and how to prove who we are. The token travels only in the
/// `Authorization` header, never in the URL, and is never printed (`--help` hides its value).
#[derive(Debug, Clone, Args)]
pub struct Connection {
    /// The dockhand server.
    #[arg(long, env = "DOCKHAND_URL", default_value = "http://127.0.0.1:8700")]
    pub url: String,
    /// API token (a `[[tokens]]` entry of the server's config).
    #[arg(long, env = "DOCKHAND_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// A file holding the API token (used when no token is given).
    #[arg(long, env = "DOCKHAND_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
}

/// The commands that talk to a running server. Exit codes: 0 done (a followed deploy
/// succeeded), 1 a followed deploy ended in any other status, 2 usage errors and errors
/// (the server refused, could not be reached, or the event stream broke).
#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Deploy the tip of the tracked branch, or a branch, tag or commit.
    Deploy {
        /// The app (its `name` in the server's config).
        app: String,
        /// Branch, tag or (short) commit id; default: the tip of the tracked branch.
        #[arg(long = "ref", value_name = "REF")]
        git_ref: Option<String>,
        /// Force the full path (pull, new container, health gate).
        #[arg(long, conflicts_with = "fast")]
        full: bool,
        /// Force the fast path (changed files into the volume, reload).
        #[arg(long)]
        fast: bool,
        #[command(flatten)]
        queue: QueueArgs,
        #[command(flatten)]
        conn: Connection,
    },
    /// Roll back: default the last succeeded deploy before the current one.
    Rollback {
        /// The app (its `name` in the server's config).
        app: String,
        /// A deploy id (a number below 1000000), a commit id or a tag.
        #[arg(long, value_name = "X")]
        to: Option<String>,
        #[command(flatten)]
        queue: QueueArgs,
        #[command(flatten)]
        conn: Connection,
    },
    /// Promote: run the commit and image digest that a deploy of another app (of the same
    /// repository: staging, say) ran.
    Promote {
        /// The app to deploy (its `name` in the server's config).
        app: String,
        /// The deploy of the other app to promote (its id: `dockhand history staging`).
        #[arg(long = "from", value_name = "DEPLOY_ID")]
        from_deploy: i64,
        #[command(flatten)]
        queue: QueueArgs,
        #[command(flatten)]
        conn: Connection,
    },
    /// Dry run: which commit, which path and why, which files change. Changes nothing.
    Plan {
        /// The app (its `name` in the server's config).
        app: String,
        /// Branch, tag or (short) commit id; default: the tip of the tracked branch.
        #[arg(long = "ref", value_name = "REF")]
        git_ref: Option<String>,
        /// Print the API's JSON unchanged.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        conn: Connection,
    },
    /// An app's deploys, newest first.
    History {
        /// The app (its `name` in the server's config).
        app: String,
        /// How many (1-1000).
        #[arg(long, default_value_t = 20)]
        limit: u32,
        /// Print the API's JSON unchanged.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        conn: Connection,
    },
    /// One deploy's steps with their output.
    Logs {
        /// The deploy's id (as `history` and `deploy` print it).
        deploy_id: u64,
        /// Follow a running deploy live; exit 0 only if it succeeds.
        #[arg(long)]
        follow: bool,
        /// Print the API's JSON unchanged (with --follow: one JSON event per line).
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        conn: Connection,
    },
    /// Lock an app: pushes are recorded, not deployed; manual deploys need --force.
    Lock {
        /// The app (its `name` in the server's config).
        app: String,
        /// Why (shown to whoever tries to deploy).
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        conn: Connection,
    },
    /// Unlock an app: the next push deploys again.
    Unlock {
        /// The app (its `name` in the server's config).
        app: String,
        #[command(flatten)]
        conn: Connection,
    },
    /// Every app: deployed commit, since when, last deploy, lock, proxy.
    Status {
        /// Print the API's JSON unchanged.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        conn: Connection,
    },
    /// Switch an app's proxy to its maintenance page (on) or back (off).
    Maintenance {
        /// The app (its `name` in the server's config).
        app: String,
        /// on: every request gets 503 and the maintenance page; off: forward again.
        #[arg(value_enum)]
        state: Switch,
        #[command(flatten)]
        conn: Connection,
    },
}

/// What `deploy` and `rollback` share: how the call is made and how its answer is shown.
#[derive(Debug, Clone, Args)]
pub struct QueueArgs {
    /// Go ahead even though the app is locked.
    #[arg(long)]
    pub force: bool,
    /// Show each step live; exit 0 only if the deploy succeeds.
    #[arg(long)]
    pub follow: bool,
    /// Print the API's JSON answer (with --follow: then one JSON event per line).
    #[arg(long)]
    pub json: bool,
}

/// `on` or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Switch {
    On,
    Off,
}

/// `dockhand check`: the report for a valid config (errors are returned for `main` to print).
/// How `check` says an app reaches its origin: credentials, trusted roots, host keys.
fn access_label(app: &crate::config::AppConfig) -> String {
    use crate::git::Credentials;
    let a = &app.access;
    let ssh = app.repo.starts_with("ssh://")
        || app.repo.starts_with("git+ssh://")
        || app.repo.starts_with("ssh+git://")
        || (!app.repo.contains("://") && app.repo.contains(':'));
    let mut parts = vec![match &a.credentials {
        Credentials::None if app.repo.contains('@') && !ssh => {
            "with the credentials in the repo URL".to_string()
        }
        Credentials::None if app.github.as_ref().is_some_and(|g| g.fetch_token) => {
            "with [github]'s token for the repository, asked for at every fetch".to_string()
        }
        Credentials::None => "without credentials".to_string(),
        Credentials::GithubToken(_) => "with [github]'s token".to_string(),
        Credentials::Token(_) => "with the token from token_env".to_string(),
        Credentials::TokenFile(f) => {
            format!("with the token in {} (read at every fetch)", f.display())
        }
        Credentials::SshKey(k) => format!("with the deploy key {}", k.display()),
    }];
    if app.repo.starts_with("https://") {
        parts.push(match &a.ca_file {
            Some(f) => format!("trusting the system roots and {}", f.display()),
            None => "trusting the system roots".to_string(),
        });
    }
    if ssh {
        parts.push(match &a.known_hosts {
            Some(f) => format!("host key pinned in {}", f.display()),
            None => "host keys from ~/.ssh/known_hosts and /etc/ssh/ssh_known_hosts (set known_hosts to pin)"
                .to_string(),
        });
    }
    parts.join(", ")
}

pub fn check_report(path: &Path) -> anyhow::Result<String> {
    let (config, warnings) = Config::load(path)?;
    let problems = crate::deploy::hooks::problems(&config);
    if !problems.is_empty() {
        anyhow::bail!(
            "invalid hooks in {}: {}",
            path.display(),
            problems.join("; ")
        );
    }
    let hooks = crate::deploy::hooks::inventory(&config);
    let mut out = String::new();
    let _ = writeln!(out, "config ok: {}", path.display());
    report_server(&mut out, &config);
    for app in &config.apps {
        report_app(&mut out, app, &hooks);
    }
    report_tokens(&mut out, &config);
    report_notify(&mut out, &config);
    for w in warnings {
        let _ = writeln!(out, "warning: {w}");
    }
    Ok(out)
}

/// What `check` asks each Swarm app's manager: that it is a manager and has the service.
/// One line per service; `Err` names the first app whose service is not there.
pub async fn check_swarm_services(path: &Path) -> anyhow::Result<String> {
    let (config, _) = Config::load(path)?;
    let mut out = String::new();
    for app in &config.apps {
        let Some(sw) = &app.swarm else { continue };
        let found = async {
            let manager = crate::runtime::Swarm::connect(&sw.manager_host()).await?;
            manager.service(&sw.service).await
        };
        let service = found
            .await
            .map_err(|e: anyhow::Error| e.context(format!("app {}: swarm", app.name)))?;
        let replicas = match service.replicas {
            Some(n) => format!("{n} replica(s)"),
            None => "global".to_string(),
        };
        let _ = writeln!(
            out,
            "swarm: app {} is service {} ({replicas}), running {}",
            app.name, sw.service, service.image
        );
    }
    Ok(out)
}

/// One hook as `hooks::inventory` lists it: app, stage, path, problem.
type HookEntry = (String, crate::deploy::hooks::Stage, PathBuf, Option<String>);

/// The `server:` and `hooks:` lines of `check_report`.
fn report_server(out: &mut String, config: &Config) {
    let s = &config.server;
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
    let at = s
        .public_url
        .clone()
        .unwrap_or_else(|| format!("http://{}", s.listen));
    let _ = match config.tokens.is_empty() {
        true => writeln!(
            out,
            "dashboard: {at}/ui, read-only for anyone (no [[tokens]])"
        ),
        false => writeln!(
            out,
            "dashboard: {at}/ui, sign in with a [[tokens]] token; sessions last {:?}{}",
            s.session_ttl,
            if s.secure_cookies {
                ", cookie Secure (https only)"
            } else {
                ""
            }
        ),
    };
}

/// One app's block of `check_report`: how it deploys, then its full path, then what triggers it.
fn report_app(out: &mut String, app: &AppConfig, hooks: &[HookEntry]) {
    report_fast_path(out, app, hooks);
    report_full_path(out, app);
    report_triggers(out, app);
}

/// What an app tracks, where it deploys, its check and its hooks.
fn report_fast_path(out: &mut String, app: &AppConfig, hooks: &[HookEntry]) {
    let reload = app.reload.to_string();
    let _ = writeln!(out, "app {}", app.name);
    let _ = writeln!(
        out,
        "  tracks   {} ({}), {}",
        app.repository_label(),
        redact_url(&app.repo),
        app.tracking_label()
    );
    let _ = writeln!(out, "  fetches  {}", access_label(app));
    let layout = match app.layout {
        crate::config::Layout::InPlace => "in place".to_string(),
        crate::config::Layout::Releases { keep } => {
            format!("releases/<sha> + current, keeping {keep}")
        }
    };
    let _ = writeln!(
        out,
        "  deploys  into {} ({layout}; fast path), reload: {reload}",
        app.volume.display()
    );
    if let Some(check) = &app.check {
        let watch = match check.watch.is_zero() {
            true => String::new(),
            false => format!(", watched for {:?} after", check.watch),
        };
        let _ = writeln!(
            out,
            "  check    {} within {:?} after each fast deploy ({} wrong-status answers in a row fail it{watch}); reverts on failure",
            check.url,
            check.deadline,
            check.failures + 1
        );
    }
    let app_hooks: Vec<String> = hooks
        .iter()
        .filter(|(name, ..)| *name == app.name)
        .map(|(_, stage, path, _)| format!("{stage} {}", path.display()))
        .collect();
    if !app_hooks.is_empty() {
        let _ = writeln!(out, "  hooks    {}", app_hooks.join(", "));
    }
}

/// An app's container and proxy, when it has them.
fn report_full_path(out: &mut String, app: &AppConfig) {
    if let Some(c) = &app.container {
        let _ = writeln!(
            out,
            "  full     image {}, mounted at {}, health http://127.0.0.1:$PORT{} within {:?}",
            c.image, c.mount, c.health_path, c.health_deadline
        );
    }
    if let Some(sw) = &app.swarm {
        let p = sw.policy;
        let _ = writeln!(
            out,
            "  swarm    service {} on {}: image {} pinned by digest, {} task(s) at a time ({}), each watched {:?}, rollback on failure, deadline {:?}",
            sw.service,
            sw.manager_host(),
            sw.image,
            p.parallelism,
            if p.start_first { "start-first" } else { "stop-first" },
            p.monitor,
            sw.deadline
        );
    }
    if let Some(p) = &app.proxy {
        let upstream = p
            .upstream
            .map_or("the live container".to_string(), |u| u.to_string());
        let _ = writeln!(
            out,
            "  proxy    {} -> {upstream}, drain {:?}{}; {}",
            p.listen,
            p.drain_timeout,
            if p.maintenance {
                ", in maintenance"
            } else {
                ""
            },
            match p.hold_timeout.is_zero() {
                true => "no hold during reloads".to_string(),
                false => format!("holds requests during reloads (up to {:?})", p.hold_timeout),
            }
        );
    }
}

/// Whether a rollback locks the app, and what deploys it: webhook and poll.
fn report_triggers(out: &mut String, app: &AppConfig) {
    if !app.lock_on_rollback {
        let _ = writeln!(
            out,
            "  rollback does not lock the app (lock_on_rollback = false)"
        );
    }
    let _ = match app.secret {
        Some(_) => writeln!(
            out,
            "  webhook  POST /hooks/github/{} (or /hooks/github)",
            app.name
        ),
        None => writeln!(out, "  webhook  none (no secret: deliveries are refused)"),
    };
    let poll = match app.poll.is_zero() {
        true => "never (poll = \"0s\"): only webhooks and API calls deploy".to_string(),
        false => format!(
            "{} every {} (one ref listing; a tip not deployed is deployed)",
            app.tracking_label(),
            humantime_serde::re::humantime::format_duration(app.poll)
        ),
    };
    let _ = writeln!(out, "  polls    {poll}");
}

/// The `api:` line when there are no tokens, and one line per token (never its value).
fn report_tokens(out: &mut String, config: &Config) {
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
        let access = if t.read_only { ", read-only" } else { "" };
        let _ = writeln!(out, "token {} (redacted) for {apps}{access}", t.name);
    }
}

/// One line per `[[notify]]` receiver: its kind, events and apps, never its URL (Slack's and
/// Discord's are credentials).
fn report_notify(out: &mut String, config: &Config) {
    for n in &config.notify {
        let kind = match n.kind {
            crate::config::NotifyKind::Slack => "slack",
            crate::config::NotifyKind::Discord => "discord",
            crate::config::NotifyKind::Webhook if n.secret.is_some() => "signed webhook",
            crate::config::NotifyKind::Webhook => "unsigned webhook",
        };
        let apps = n
            .apps
            .as_ref()
            .map_or("every app".to_string(), |a| a.join(", "));
        let _ = writeln!(
            out,
            "notify {} ({kind}, url redacted): {} for {apps}",
            n.name,
            n.on.join(", ")
        );
    }
    if let Some(gh) = &config.github {
        let auth = match &gh.auth {
            crate::config::GithubAuth::Token(_) => "token_env".to_string(),
            crate::config::GithubAuth::TokenFile(f) => format!("token_file {}", f.display()),
            crate::config::GithubAuth::App { app_id, .. } => format!("GitHub App {app_id}"),
        };
        for app in &config.apps {
            let Some(g) = &app.github else { continue };
            let what = match (g.deployments, g.commit_status) {
                (true, true) => "deployments and commit statuses",
                (true, false) => "deployments",
                (false, true) => "commit statuses",
                (false, false) => "nothing (deployments = false, commit_status = false)",
            };
            let _ = writeln!(
                out,
                "github {}: {what} in {}/{}, environment {:?}, via {} ({auth})",
                app.name, g.owner, g.repo, g.environment, gh.api_url
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_lists_notification_receivers_without_their_url() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("dockhand.toml");
        let url = "https://hooks.slack.test/services/T0/B0/secret-part";
        std::fs::write(dir.path().join("url"), url).unwrap();
        std::fs::write(
            &config,
            "[server]\nstate_dir = \"state\"\npublic_url = \"https://deploy.example.test\"\n\
             [[apps]]\nname = \"web\"\nrepo = \"/srv/web.git\"\nsecret = \"s3cret\"\nvolume = \"volume\"\n\
             [[notify]]\nname = \"ops\"\nkind = \"slack\"\nurl_file = \"url\"\non = [\"failed\", \"reverted\"]\n",
        )
        .unwrap();
        let report = check_report(&config).unwrap();
        assert!(
            report.contains("notify ops (slack, url redacted): failed, reverted for every app"),
            "{report}"
        );
        assert!(!report.contains("secret-part"), "{report}");
    }

    #[test]
    fn check_lists_each_app_told_to_github_and_how_it_authenticates() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("gh"), "ghp_secret-value").unwrap();
        let config = dir.path().join("dockhand.toml");
        std::fs::write(
            &config,
            "[server]\nstate_dir = \"state\"\n\
             [[apps]]\nname = \"web\"\nrepo = \"https://github.com/acme/web.git\"\nsecret = \"s3cret\"\nvolume = \"volume\"\n\
             [apps.github]\ncommit_status = true\n[github]\ntoken_file = \"gh\"\n",
        )
        .unwrap();
        let report = check_report(&config).unwrap();
        assert!(
            report.contains("github web: deployments and commit statuses in acme/web, environment \"web\", via https://api.github.com (token_file "),
            "{report}"
        );
        assert!(!report.contains("ghp_secret-value"), "{report}");
    }

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
             [[tokens]]\nname = \"ci\"\ntoken_file = \"token\"\napps = [\"web\"]\n\
             [[tokens]]\nname = \"viewer\"\ntoken_file = \"viewer\"\napps = [\"*\"]\nread_only = true\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("viewer"), "viewer-token-0123456789abcdef").unwrap();
        let report = check_report(&config).unwrap();
        assert!(report.contains("token ci (redacted) for web\n"), "{report}");
        assert!(
            report.contains("token viewer (redacted) for every app, read-only\n"),
            "{report}"
        );
        assert!(report.contains("rollback does not lock"), "{report}");
        assert!(!report.contains(token), "{report}");
    }

    #[test]
    fn check_shows_the_layout_the_check_and_the_proxy() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("dockhand.toml");
        std::fs::write(
            &config,
            "[server]\nstate_dir = \"state\"\n\
             [[apps]]\nname = \"web\"\nrepo = \"/srv/web.git\"\nsecret = \"s3cret\"\nvolume = \"volume\"\n\
             layout = \"releases\"\nkeep_releases = 3\n\
             [apps.proxy]\nlisten = \"127.0.0.1:8080\"\nupstream = \"127.0.0.1:9000\"\nmaintenance = true\n\
             [apps.check]\nurl = \"http://127.0.0.1:9000/version\"\n",
        )
        .unwrap();
        let report = check_report(&config).unwrap();
        assert!(
            report.contains("releases/<sha> + current, keeping 3"),
            "{report}"
        );
        assert!(
            report.contains("check    http://127.0.0.1:9000/version within 30s"),
            "{report}"
        );
        assert!(
            report.contains("proxy    127.0.0.1:8080 -> 127.0.0.1:9000, drain 30s, in maintenance"),
            "{report}"
        );
        assert!(
            report.contains("holds requests during reloads (up to 10s)"),
            "{report}"
        );
    }
}
