//! Raw → validated: defaults put in, every key checked, section by section. Errors name the
//! field (`server.queue_limit: …`, `apps[0] (web).volume: …`); the warnings are what `check`
//! prints.
//!
//! Nothing here reads the environment or the filesystem itself: where a check needs to (a
//! secret, a path's existence), it calls [`super::resolve`], at the point the check has always
//! run, so the first error of a config is the one reported.
//!
//! - this file: `[server]`, the warnings about the server, and what the apps must not share
//!   (names, volumes, proxy addresses);
//! - `app`: one `[[apps]]` entry's own keys and its `[apps.check]`;
//! - `container`: `[apps.container]`;
//! - `proxy`: `[apps.proxy]`.

mod app;
mod container;
mod proxy;
mod swarm;

use std::collections::HashSet;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};

use super::raw::{
    RawApp, RawServer, RawToken, DEFAULT_BODY_LIMIT, DEFAULT_HISTORY_RETENTION,
    DEFAULT_HOOK_TIMEOUT, DEFAULT_METRICS_LISTEN, DEFAULT_QUEUE_LIMIT, DEFAULT_REQUEST_TIMEOUT,
    DEFAULT_SESSION_TTL, DEFAULT_WAIT_TIMEOUT,
};
use super::resolve::{self, absolute, resolved};
use super::{AppConfig, ServerConfig};

/// The shortest poll interval accepted (other than zero, which turns polling off).
pub const MIN_POLL: Duration = Duration::from_secs(1);

/// `server.public_url`: where people reach dockhand, for the links in notifications; kept
/// without a trailing slash.
fn public_url(raw: Option<String>) -> anyhow::Result<Option<String>> {
    let Some(raw) = raw else { return Ok(None) };
    match reqwest::Url::parse(&raw) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() && u.query().is_none() => {
            Ok(Some(raw.trim_end_matches('/').to_string()))
        }
        _ => bail!("server.public_url: {raw:?} is not an http:// or https:// URL without a query (e.g. \"https://deploy.example.com\")"),
    }
}

/// `[server]`, with its defaults; `hooks_dir` must exist.
pub(super) fn server(raw: RawServer, base: &Path) -> anyhow::Result<ServerConfig> {
    let server = ServerConfig {
        listen: raw.listen,
        state_dir: absolute(base, &raw.state_dir),
        body_limit: raw.body_limit.map_or(DEFAULT_BODY_LIMIT, |b| b.as_u64()),
        request_timeout: raw.request_timeout.unwrap_or(DEFAULT_REQUEST_TIMEOUT),
        queue_limit: raw.queue_limit.unwrap_or(DEFAULT_QUEUE_LIMIT),
        history_retention: raw.history_retention.unwrap_or(DEFAULT_HISTORY_RETENTION),
        wait_timeout: raw.wait_timeout.unwrap_or(DEFAULT_WAIT_TIMEOUT),
        hooks_dir: raw.hooks_dir.map(|d| absolute(base, &d)),
        hook_timeout: raw.hook_timeout.unwrap_or(DEFAULT_HOOK_TIMEOUT),
        metrics_listen: raw.metrics_listen.or(DEFAULT_METRICS_LISTEN),
        // Read by `tokens::metrics_token`, with the other secrets' I/O.
        metrics_token: None,
        secure_cookies: raw.secure_cookies.unwrap_or_else(|| {
            raw.public_url
                .as_deref()
                .is_some_and(|u| u.starts_with("https://"))
        }),
        public_url: public_url(raw.public_url)?,
        session_ttl: raw.session_ttl.unwrap_or(DEFAULT_SESSION_TTL),
    };
    if server.session_ttl < std::time::Duration::from_secs(60) {
        bail!("server.session_ttl: must be at least a minute (the default is 12h)");
    }
    if server.body_limit == 0 {
        bail!("server.body_limit: must be greater than zero");
    }
    if server.queue_limit == 0 {
        bail!("server.queue_limit: must be greater than zero");
    }
    if server.hook_timeout.is_zero() {
        bail!("server.hook_timeout: must be greater than zero");
    }
    if let Some(metrics) = server.metrics_listen {
        if metrics == server.listen && metrics.port() != 0 {
            bail!(
                "server.metrics_listen: {metrics} is server.listen's address; give it another \
                 port, or leave metrics_listen out to serve /metrics on server.listen"
            );
        }
    }
    if let Some(dir) = &server.hooks_dir {
        resolve::check_hooks_dir(dir)?;
    }
    Ok(server)
}

/// What `check` warns about before any app is validated: no apps at all, an API (or open
/// metrics) reachable beyond this host, secret files every user may read, hooks others may
/// change.
pub(super) fn server_warnings(
    server: &ServerConfig,
    apps: &[RawApp],
    tokens: &[RawToken],
    base: &Path,
) -> Vec<String> {
    let mut warnings = Vec::new();
    if apps.is_empty() {
        warnings.push("no [[apps]] configured: every webhook will be refused".to_string());
    }
    if !server.listen.ip().is_loopback() {
        warnings.push(format!(
            "server.listen {} is reachable beyond this host: API tokens and webhook bodies \
             cross the network in clear unless TLS is in front (a reverse proxy terminating HTTPS)",
            server.listen
        ));
    }
    if let Some(metrics) = server.metrics_listen {
        if !metrics.ip().is_loopback() && server.metrics_token.is_none() {
            warnings.push(format!(
                "server.metrics_listen {metrics} is reachable beyond this host without a token: \
                 set server.metrics_token_file (or _env) and give Prometheus the same token"
            ));
        }
    }
    warnings.extend(resolve::permission_warnings(
        &secret_files(apps, tokens, base),
        server.hooks_dir.as_deref(),
    ));
    warnings
}

/// Every file a secret is read from, with what it is (`app web: secret_file`), for the
/// permission warnings.
fn secret_files(apps: &[RawApp], tokens: &[RawToken], base: &Path) -> Vec<(String, PathBuf)> {
    let mut secret_files: Vec<(String, PathBuf)> = Vec::new();
    for app in apps {
        let name = &app.name;
        for (field, file) in [
            ("secret_file", &app.secret_file),
            ("token_file", &app.token_file),
            ("ssh_key", &app.ssh_key),
        ] {
            if let Some(f) = file {
                secret_files.push((format!("app {name}: {field}"), absolute(base, f)));
            }
        }
        if let Some(c) = &app.container {
            if let Some(f) = &c.registry_password_file {
                secret_files.push((
                    format!("app {name}: registry_password_file"),
                    absolute(base, f),
                ));
            }
            for (var, f) in &c.env_from_file {
                secret_files.push((
                    format!("app {name}: env_from_file.{var}"),
                    absolute(base, f),
                ));
            }
        }
    }
    for t in tokens {
        if let Some(f) = &t.token_file {
            secret_files.push((format!("token {}: token_file", t.name), absolute(base, f)));
        }
    }
    secret_files
}

/// The `[[apps]]`, each validated and then checked against the server and the apps before it:
/// a name of its own, a volume that overlaps nothing, a proxy address of its own.
pub(super) fn apps(
    raw: Vec<RawApp>,
    server: &ServerConfig,
    base: &Path,
    warnings: &mut Vec<String>,
) -> anyhow::Result<Vec<AppConfig>> {
    let mut names = HashSet::new();
    let mut apps = Vec::with_capacity(raw.len());
    for (i, app) in raw.into_iter().enumerate() {
        let label = format!("apps[{i}] ({})", app.name);
        if !names.insert(app.name.clone()) {
            bail!("{label}.name: duplicate app name {:?}", app.name);
        }
        let app = app::validate_app(app, base, warnings).with_context(|| label.clone())?;
        check_volume_is_its_own(&label, &app, server, &apps)?;
        check_proxy_listen_is_its_own(&label, &app, server, &apps)?;
        apps.push(app);
    }
    Ok(apps)
}

/// An app's volume overlaps neither the state dir, the hooks dir nor an earlier app's volume.
fn check_volume_is_its_own(
    label: &str,
    app: &AppConfig,
    server: &ServerConfig,
    earlier: &[AppConfig],
) -> anyhow::Result<()> {
    // Compared as the filesystem resolves them: `..` and symlinks cannot hide an overlap.
    let volume = resolved(&app.volume);
    if overlap(&volume, &resolved(&server.state_dir)) {
        bail!("{label}.volume: must not overlap server.state_dir (git metadata never lives in a volume)");
    }
    if let Some(dir) = &server.hooks_dir {
        if overlap(&volume, &resolved(dir)) {
            bail!("{label}.volume: must not overlap server.hooks_dir (a repository's files are never hooks)");
        }
    }
    if let Some(other) = earlier
        .iter()
        .find(|a| overlap(&volume, &resolved(&a.volume)))
    {
        bail!(
            "{label}.volume: {} overlaps app {}'s volume {} (each app owns its volume alone)",
            app.volume.display(),
            other.name,
            other.volume.display()
        );
    }
    Ok(())
}

/// An app's proxy (if any) listens neither where the server does nor where an earlier app's
/// proxy does (port 0, a fresh port each time, never clashes).
fn check_proxy_listen_is_its_own(
    label: &str,
    app: &AppConfig,
    server: &ServerConfig,
    earlier: &[AppConfig],
) -> anyhow::Result<()> {
    let Some(proxy) = &app.proxy else {
        return Ok(());
    };
    let taken = proxy.listen.port() != 0
        && (proxy.listen == server.listen
            || earlier
                .iter()
                .any(|a| a.proxy.as_ref().is_some_and(|p| p.listen == proxy.listen)));
    if taken {
        bail!(
            "{label}.proxy.listen: {} is already used by the server or another app",
            proxy.listen
        );
    }
    Ok(())
}

/// Whether one of two resolved paths is inside the other (or they are the same).
fn overlap(a: &Path, b: &Path) -> bool {
    a.starts_with(b) || b.starts_with(a)
}

/// An app or token name: usable in URLs and messages as is.
/// `{label}.name` is a [`valid_name`] and no name in `taken` (a `[[tokens]]` or `[[notify]]`
/// entry's: each is known by it).
pub(super) fn check_entry_name<'a>(
    label: &str,
    name: &str,
    mut taken: impl Iterator<Item = &'a str>,
) -> anyhow::Result<()> {
    if !valid_name(name) {
        bail!("{label}.name: {name:?} must be 1-64 of [A-Za-z0-9._-], starting with a letter or digit");
    }
    if taken.any(|other| other == name) {
        bail!("{label}.name: duplicate name {name:?}");
    }
    Ok(())
}

pub(super) fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// A path inside the deployed tree: relative, without `..` (`touch`, `revision_file`).
fn check_relative(path: &Path) -> anyhow::Result<()> {
    let ok = !path.as_os_str().is_empty()
        && path.components().all(|c| matches!(c, Component::Normal(_)));
    if !ok {
        bail!(
            "{} must be a relative path inside the deployed tree (no '..', no leading '/')",
            path.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use crate::config::testing::{parse, APP};
    use crate::config::{Config, DEFAULT_HOOK_TIMEOUT};

    #[test]
    fn hooks_dir_must_exist_and_hook_timeouts_default_to_sixty_seconds() {
        let (config, _) = parse(APP).unwrap();
        assert_eq!(config.server.hooks_dir, None);
        assert_eq!(config.server.hook_timeout, DEFAULT_HOOK_TIMEOUT);
        assert_eq!(config.apps[0].hook_timeout, None);

        let hooks = tempfile::tempdir().unwrap();
        let server = format!(
            "[server]\nstate_dir = \"/var/lib/dockhand-test\"\nhooks_dir = \"{}\"\nhook_timeout = \"2m\"\n",
            hooks.path().display()
        );
        let text = format!("{server}{APP}hook_timeout = \"5s\"\n");
        let (config, _) = Config::parse(&text, Path::new("/")).unwrap();
        assert_eq!(config.server.hooks_dir.as_deref(), Some(hooks.path()));
        assert_eq!(config.server.hook_timeout, Duration::from_secs(120));
        assert_eq!(config.apps[0].hook_timeout, Some(Duration::from_secs(5)));

        let missing = server.replace(hooks.path().to_str().unwrap(), "/nonexistent/hooks");
        let err = format!("{:#}", Config::parse(&missing, Path::new("/")).unwrap_err());
        assert!(
            err.contains("server.hooks_dir: /nonexistent/hooks does not exist"),
            "{err}"
        );
        let err = format!(
            "{:#}",
            parse(&format!("{APP}hook_timeout = \"0s\"\n")).unwrap_err()
        );
        assert!(
            err.contains("hook_timeout: must be greater than zero"),
            "{err}"
        );
    }
}
