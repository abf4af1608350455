//! One `[[apps]]` entry: its own keys (name, repo, branch, tags, secret, volume, layout, reload,
//! limits, poll) and its `[apps.check]`; the container and the proxy are their own files'.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use bytesize::ByteSize;

use super::container::validate_container;
use super::proxy::validate_proxy;
use super::swarm::validate_swarm;
use super::{check_relative, valid_name, MIN_POLL};
use crate::config::raw::{
    RawApp, RawCheck, RawPoll, DEFAULT_BRANCH, DEFAULT_CHECK_DEADLINE, DEFAULT_CHECK_FAILURES,
    DEFAULT_CHECK_GRACE, DEFAULT_CHECK_INTERVAL, DEFAULT_CHECK_TIMEOUT, DEFAULT_CHECK_WATCH,
    DEFAULT_FETCH_TIMEOUT, DEFAULT_KEEP_RELEASES, DEFAULT_LOCK_ON_ROLLBACK, DEFAULT_MAX_FETCH_SIZE,
    DEFAULT_MAX_TREE_SIZE, DEFAULT_POLL, DEFAULT_RELOAD_TIMEOUT, DEFAULT_REVISION_FILE,
};
use crate::config::resolve::{self, absolute};
use crate::config::{compile_globs, AppConfig, AppPaths, FastCheck, Layout, Reload, TagPattern};
use crate::git::{Access, Credentials, FetchLimits};
use crate::redact::{redact_url, Secret};

/// Signals a reload may send, by their names without `SIG`.
const SIGNALS: [&str; 9] = [
    "HUP", "USR1", "USR2", "INT", "QUIT", "TERM", "WINCH", "TTIN", "TTOU",
];

/// One app, its checks in the order they have always run; errors name the field (the caller
/// puts the app's label in front).
pub(super) fn validate_app(
    raw: RawApp,
    base: &Path,
    warnings: &mut Vec<String>,
) -> anyhow::Result<AppConfig> {
    let access = access(&raw, base, warnings)?;
    check_fetch_token(&raw, &access)?;
    check_name_and_repo(&raw)?;
    let branch = branch(raw.branch.as_deref())?;
    let tags = tags(raw.tags.as_deref())?;
    let poll = poll_interval(raw.poll.as_ref())?;
    let (secret, inline_secret) = secret(&raw, poll, base, warnings)?;
    let volume = absolute(base, &raw.volume);
    resolve::check_volume(&volume)?;
    let layout = layout(raw.layout.as_deref(), raw.keep_releases)?;
    let revision_file = revision_file(raw.revision_file.as_deref())?;
    let reload = reload(&raw, layout)?;
    if raw.swarm.is_some() {
        check_swarm_app(&raw, &reload)?;
    }
    let check = raw.check.map(validate_check).transpose().context("check")?;
    let fetch_limits = FetchLimits {
        timeout: raw.fetch_timeout.unwrap_or(DEFAULT_FETCH_TIMEOUT),
        max_bytes: raw
            .max_fetch_size
            .map_or(DEFAULT_MAX_FETCH_SIZE, |b| b.as_u64()),
    };
    let max_tree_size = max_tree_size(raw.max_tree_size)?;
    let reload_timeout = reload_timeout(raw.reload_timeout)?;
    let container = raw
        .container
        .map(|c| validate_container(c, base))
        .transpose()
        .context("container")?;
    let swarm = raw.swarm.map(validate_swarm).transpose().context("swarm")?;
    let proxy = raw
        .proxy
        .map(|p| validate_proxy(p, container.is_some() || swarm.is_some()))
        .transpose()
        .context("proxy")?;
    if raw.hook_timeout.is_some_and(|t| t.is_zero()) {
        bail!("hook_timeout: must be greater than zero");
    }
    let paths = raw.paths.map(app_paths).transpose().context("paths")?;
    let github = raw
        .github
        .map(|g| {
            crate::config::github::app_github(g, &raw.name, raw.repository.as_deref(), &raw.repo)
        })
        .transpose()?;
    Ok(AppConfig {
        github,
        paths,
        poll,
        container,
        swarm,
        proxy,
        hook_timeout: raw.hook_timeout,
        name: raw.name,
        repo: raw.repo,
        repository: raw.repository,
        branch,
        tags,
        secret,
        inline_secret,
        volume,
        layout,
        reload,
        revision_file,
        reload_container: raw.reload_container,
        check,
        revert_on_hook_failure: raw.revert_on_hook_failure,
        adopt: raw.adopt,
        fetch_limits,
        access,
        max_tree_size,
        reload_timeout,
        lock_on_rollback: raw.lock_on_rollback.unwrap_or(DEFAULT_LOCK_ON_ROLLBACK),
    })
}

/// `[apps.github] fetch_token`: an http(s) origin, and no credentials of the app's own.
fn check_fetch_token(raw: &RawApp, access: &Access) -> anyhow::Result<()> {
    if raw.github.as_ref().and_then(|g| g.fetch_token) != Some(true) {
        return Ok(());
    }
    if !(raw.repo.starts_with("https://") || raw.repo.starts_with("http://")) {
        bail!("github.fetch_token: repo {:?} is not an https:// URL; the token is a password for GitHub's smart HTTP", redact_url(&raw.repo));
    }
    if !matches!(access.credentials, Credentials::None) || raw.repo.contains('@') {
        bail!("github.fetch_token: the app has credentials of its own (token_env, token_file, ssh_key or a user in repo); keep one of the two");
    }
    Ok(())
}

/// What a Swarm service app cannot have (yet): a container of this host, a reload acting on
/// one, a check or proxy aimed at one loopback port.
fn check_swarm_app(raw: &RawApp, reload: &Reload) -> anyhow::Result<()> {
    if raw.container.is_some() {
        bail!("swarm: an app is a container on this host ([apps.container]) or a Swarm service ([apps.swarm]), not both");
    }
    if reload.needs_container() || *reload == Reload::Swap || raw.reload_container.is_some() {
        bail!("swarm: a service's deploys are rolled out by its manager; signal, exec, restart, swap and reload_container act on a container of this host (leave reload at touch or none)");
    }
    if raw.check.is_some() {
        bail!("swarm: [apps.check] probes this host's loopback; a service's tasks are gated by the image's HEALTHCHECK, which the manager waits for");
    }
    if raw.proxy.as_ref().is_some_and(|p| p.upstream.is_some()) {
        bail!("proxy.upstream: a Swarm service's running tasks are the upstreams; remove upstream and set swarm.port");
    }
    if raw.proxy.is_some() && raw.swarm.as_ref().and_then(|s| s.port).is_none() {
        bail!("swarm.port: [apps.proxy] forwards to each running task at its node's address on this port (the tasks use host networking); set it");
    }
    Ok(())
}

/// How the app's fetches reach its origin: credentials, `ca_file` and `known_hosts` (read by
/// `resolve`); `check` warns about credentials over plain `http://`.
fn access(raw: &RawApp, base: &Path, warnings: &mut Vec<String>) -> anyhow::Result<Access> {
    let credentials = resolve::credentials(raw, base)?;
    let scheme = raw
        .repo
        .split_once("://")
        .map(|(s, _)| s.to_ascii_lowercase());
    let has_token = !matches!(credentials, Credentials::None | Credentials::SshKey(_));
    if scheme.as_deref() == Some("http") && (has_token || raw.repo.contains('@')) {
        warnings.push(format!(
            "repo {}: credentials over plain http:// can be read by anyone on the path; use https://",
            redact_url(&raw.repo)
        ));
    }
    let ca_file = resolve::ca_file(raw.ca_file.as_ref(), base)?;
    let known_hosts = resolve::known_hosts(raw.known_hosts.as_ref(), base)?;
    Ok(Access {
        credentials,
        ca_file,
        known_hosts,
    })
}

/// `paths`: at least one pattern, each relative to the repository's root and valid as a glob.
fn app_paths(patterns: Vec<String>) -> anyhow::Result<AppPaths> {
    if patterns.is_empty() {
        bail!("give at least one pattern (\"services/web/**\"), or leave paths out to deploy on every change");
    }
    for p in &patterns {
        let parts: Vec<&str> = p.split('/').collect();
        if p.is_empty() || p.starts_with('/') || parts.iter().any(|c| *c == ".." || *c == ".") {
            bail!("{p:?}: patterns are relative to the repository's root (\"services/web/**\"), without leading /, . or ..");
        }
    }
    let globs = compile_globs(&patterns)?;
    Ok(AppPaths { patterns, globs })
}

/// `name` usable in URLs; `repo` a URL or path that no command line can take for an option.
fn check_name_and_repo(raw: &RawApp) -> anyhow::Result<()> {
    if !valid_name(&raw.name) {
        bail!(
            "name: {:?} must be 1-64 of [A-Za-z0-9._-], starting with a letter or digit",
            raw.name
        );
    }
    if raw.repo.trim().is_empty() || raw.repo.starts_with('-') {
        bail!("repo: must be a URL or path (and not start with '-')");
    }
    Ok(())
}

/// `branch`, [`DEFAULT_BRANCH`] when absent: a valid branch name that is not an option.
fn branch(raw: Option<&str>) -> anyhow::Result<String> {
    let branch = raw.unwrap_or(DEFAULT_BRANCH).to_string();
    if branch.starts_with('-') || !crate::git::valid_ref_name(&format!("refs/heads/{branch}")) {
        bail!("branch: {branch:?} is not a valid branch name");
    }
    Ok(branch)
}

/// `tags`: a glob over tag names (`*` does not cross `/`).
fn tags(raw: Option<&str>) -> anyhow::Result<Option<TagPattern>> {
    let Some(pattern) = raw else {
        return Ok(None);
    };
    let glob = globset::GlobBuilder::new(pattern)
        .literal_separator(true)
        .build()
        .with_context(|| format!("tags: bad glob {pattern:?}"))?;
    Ok(Some(TagPattern {
        pattern: pattern.to_string(),
        matcher: glob.compile_matcher(),
    }))
}

/// `poll`: a duration of at least [`MIN_POLL`], or zero (off); [`DEFAULT_POLL`] when absent.
fn poll_interval(raw: Option<&RawPoll>) -> anyhow::Result<Duration> {
    let poll = match raw {
        None => return Ok(DEFAULT_POLL),
        Some(RawPoll::Number(0)) => return Ok(Duration::ZERO),
        Some(RawPoll::Number(n)) => {
            bail!("poll: {n} has no unit; write a duration such as \"5m\" or \"30s\" (0 turns polling off)")
        }
        Some(RawPoll::Text(text)) => humantime_serde::re::humantime::parse_duration(text)
            .with_context(|| {
                format!("poll: {text:?} is not a duration such as \"5m\" or \"30s\" (\"0s\" turns polling off)")
            })?,
    };
    if !poll.is_zero() && poll < MIN_POLL {
        bail!(
            "poll: {poll:?} is too often; at least {MIN_POLL:?} (each poll lists the origin's refs), or \"0s\" to turn polling off"
        );
    }
    Ok(poll)
}

/// The webhook secret and whether it was written inline (`check` warns). Only an app that polls
/// may have none: it then takes no webhooks.
fn secret(
    raw: &RawApp,
    poll: Duration,
    base: &Path,
    warnings: &mut Vec<String>,
) -> anyhow::Result<(Option<Secret>, bool)> {
    let no_secret = raw.secret.is_none() && raw.secret_env.is_none() && raw.secret_file.is_none();
    let (secret, inline_secret) = match no_secret {
        true if poll.is_zero() => bail!(
            "secret: missing; set secret_env or secret_file (an app without a webhook secret must poll, and poll is \"0s\")"
        ),
        true => {
            warnings.push(format!(
                "app {}: no webhook secret: it takes no webhooks and deploys by polling (every {})",
                raw.name,
                humantime_serde::re::humantime::format_duration(poll)
            ));
            (None, false)
        }
        false => {
            let (secret, inline) = resolve::read_secret(
                &raw.secret,
                &raw.secret_env,
                &raw.secret_file,
                base,
                "secret",
            )?;
            (Some(secret), inline)
        }
    };
    if inline_secret {
        warnings.push(format!(
            "app {}: the webhook secret is written inline in the config file; prefer secret_env or secret_file",
            raw.name
        ));
    }
    Ok((secret, inline_secret))
}

/// `layout` and `keep_releases` (only with `"releases"`, at least 2).
fn layout(layout: Option<&str>, keep_releases: Option<usize>) -> anyhow::Result<Layout> {
    Ok(match (layout, keep_releases) {
        (None | Some("in-place"), None) => Layout::InPlace,
        (None | Some("in-place"), Some(_)) => {
            bail!("keep_releases: only meaningful with layout = \"releases\"")
        }
        (Some("releases"), keep) => {
            let keep = keep.unwrap_or(DEFAULT_KEEP_RELEASES);
            if keep < 2 {
                bail!(
                    "keep_releases: must be at least 2 (the live release and one to roll back to)"
                );
            }
            Layout::Releases { keep }
        }
        (Some(other), _) => bail!("layout: {other:?} is not one of in-place, releases"),
    })
}

/// `revision_file`: [`DEFAULT_REVISION_FILE`] when absent, none when `""`, else a path inside
/// the tree.
fn revision_file(raw: Option<&Path>) -> anyhow::Result<Option<PathBuf>> {
    Ok(match raw {
        None => Some(PathBuf::from(DEFAULT_REVISION_FILE)),
        Some(p) if p.as_os_str().is_empty() => None,
        Some(p) => {
            check_relative(p).context("revision_file")?;
            Some(p.to_path_buf())
        }
    })
}

/// How the app reloads: at most one of `touch`, `signal`, `exec`, `restart` and `swap`, and
/// whatever that reload needs (a container to act on; for a swap, much more).
fn reload(raw: &RawApp, layout: Layout) -> anyhow::Result<Reload> {
    if raw.swap {
        check_swap(raw, layout)?;
    }
    let reload = match (&raw.touch, &raw.signal, &raw.exec, raw.restart) {
        _ if raw.swap => Reload::Swap,
        (Some(rel), None, None, false) => {
            check_relative(rel).context("touch")?;
            Reload::Touch(rel.clone())
        }
        (None, Some(signal), None, false) => {
            let name = signal.trim_start_matches("SIG").to_ascii_uppercase();
            if !SIGNALS.contains(&name.as_str()) {
                bail!("signal: {signal:?} is not one of {}", SIGNALS.join(", "));
            }
            Reload::Signal(format!("SIG{name}"))
        }
        (None, None, Some(argv), false) => {
            if argv.first().is_none_or(|a| a.is_empty()) {
                bail!("exec: must be a non-empty command, e.g. [\"pm2\", \"reload\", \"all\"]");
            }
            Reload::Exec(argv.clone())
        }
        (None, None, None, true) => Reload::Restart,
        (None, None, None, false) => Reload::None,
        _ => bail!("touch, signal, exec and restart: set at most one (how the app reloads)"),
    };
    if reload.needs_container() && raw.container.is_none() && raw.reload_container.is_none() {
        bail!(
            "reload_container: a signal, exec or restart reload needs a container: add [apps.container], \
             or name the running container with reload_container"
        );
    }
    if raw.reload_container.is_some() && raw.container.is_some() {
        bail!("reload_container: the app has [apps.container]; its live container is reloaded");
    }
    Ok(reload)
}

/// `swap = true`: no other reload, a container without a fixed port, the releases layout, a
/// proxy, and no `[apps.check]` (the container's own health gate stands in for it).
fn check_swap(raw: &RawApp, layout: Layout) -> anyhow::Result<()> {
    if raw.touch.is_some() || raw.signal.is_some() || raw.exec.is_some() || raw.restart {
        bail!("touch, signal, exec, restart and swap: set at most one (how the app reloads)");
    }
    let Some(container) = &raw.container else {
        bail!("swap: needs [apps.container] (the container it replaces)");
    };
    if !matches!(layout, Layout::Releases { .. }) {
        bail!("swap: needs layout = \"releases\" (each container mounts its own releases/<sha>)");
    }
    if container.port.is_some() {
        bail!("swap: the new container starts beside the old one on a fresh port; remove container.port");
    }
    if raw.proxy.is_none() {
        bail!("swap: needs [apps.proxy] (clients must not follow the container's changing port)");
    }
    if let Some(check) = &raw.check {
        bail!(
            "check: with swap the new container is gated by [apps.container] health_path and expect_body_contains \
             before it gets a request; remove [apps.check] (url {})",
            check.url
        );
    }
    Ok(())
}

/// `max_tree_size`, [`DEFAULT_MAX_TREE_SIZE`] when absent; never zero.
fn max_tree_size(raw: Option<ByteSize>) -> anyhow::Result<u64> {
    let max_tree_size = raw.map_or(DEFAULT_MAX_TREE_SIZE, |b| b.as_u64());
    if max_tree_size == 0 {
        bail!("max_tree_size: must be more than 0 bytes");
    }
    Ok(max_tree_size)
}

/// `reload_timeout`, [`DEFAULT_RELOAD_TIMEOUT`] when absent; never zero.
fn reload_timeout(raw: Option<Duration>) -> anyhow::Result<Duration> {
    let reload_timeout = raw.unwrap_or(DEFAULT_RELOAD_TIMEOUT);
    if reload_timeout.is_zero() {
        bail!("reload_timeout: must be more than 0s");
    }
    Ok(reload_timeout)
}

/// `[apps.check]`: a loopback URL, an HTTP status if any, and the defaults.
fn validate_check(raw: RawCheck) -> anyhow::Result<FastCheck> {
    crate::runtime::ProbeTarget::parse(&raw.url).context("url")?;
    if raw.status.is_some_and(|s| !(100..600).contains(&s)) {
        bail!("status: must be an HTTP status (100-599)");
    }
    Ok(FastCheck {
        url: raw.url,
        status: raw.status,
        expect_body_contains: raw.expect_body_contains,
        grace: raw.grace.unwrap_or(DEFAULT_CHECK_GRACE),
        interval: raw.interval.unwrap_or(DEFAULT_CHECK_INTERVAL),
        timeout: raw.timeout.unwrap_or(DEFAULT_CHECK_TIMEOUT),
        deadline: raw.deadline.unwrap_or(DEFAULT_CHECK_DEADLINE),
        failures: raw.failures.unwrap_or(DEFAULT_CHECK_FAILURES),
        watch: raw.watch.unwrap_or(DEFAULT_CHECK_WATCH),
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::config::testing::{parse, APP};
    use crate::config::{Layout, Reload, DEFAULT_BODY_LIMIT, DEFAULT_POLL};

    /// Found by the `refs_paths` fuzz target: a NUL in the branch (TOML allows `\u0000`)
    /// panicked inside git2 instead of failing the config check.
    #[test]
    fn a_branch_holding_a_nul_is_a_config_error() {
        let err = parse(&format!("{APP}branch = \"ma\\u0000in\"\n")).unwrap_err();
        let err = format!("{err:#}");
        assert!(err.contains("branch"), "{err}");
    }

    #[test]
    fn minimal_app_gets_defaults_and_warns_about_inline_secret() {
        let (config, warnings) = parse(APP).unwrap();
        let app = &config.apps[0];
        assert_eq!(app.branch, "main");
        assert_eq!(app.reload, Reload::None);
        assert_eq!(config.server.body_limit, DEFAULT_BODY_LIMIT);
        assert!(
            warnings.iter().any(|w| w.contains("inline")),
            "{warnings:?}"
        );
    }

    #[test]
    fn bad_tag_glob_and_escaping_touch_are_refused() {
        assert!(
            format!("{:#}", parse(&format!("{APP}tags = \"v[\"\n")).unwrap_err()).contains("tags")
        );
        assert!(format!(
            "{:#}",
            parse(&format!("{APP}touch = \"../x\"\n")).unwrap_err()
        )
        .contains("touch"));
    }

    #[test]
    fn paths_must_be_relative_globs_and_at_least_one() {
        let app = parse(&format!("{APP}paths = [\"services/web/**\", \"*.toml\"]\n"))
            .unwrap()
            .0;
        let paths = app.apps[0].paths.as_ref().unwrap();
        let changed =
            ["services/web/a.py", "services/api/a.py", "deep/x.toml"].map(std::path::Path::new);
        assert_eq!(paths.matching(changed), 2);
        assert!(parse(APP).unwrap().0.apps[0].paths.is_none());
        for (bad, says) in [
            ("[]", "at least one pattern"),
            ("[\"/srv/web/**\"]", "relative to the repository's root"),
            ("[\"../web/**\"]", "relative to the repository's root"),
            ("[\"web/[\"]", "web/["),
        ] {
            let err = format!("{:#}", parse(&format!("{APP}paths = {bad}\n")).unwrap_err());
            assert!(err.contains("paths") && err.contains(says), "{bad}: {err}");
        }
    }

    #[test]
    fn option_like_branch_is_refused() {
        assert!(format!(
            "{:#}",
            parse(&format!("{APP}branch = \"-x\"\n")).unwrap_err()
        )
        .contains("branch"));
    }

    #[test]
    fn the_releases_layout_keeps_five_by_default_and_at_least_two() {
        assert_eq!(parse(APP).unwrap().0.apps[0].layout, Layout::InPlace);
        let (config, _) = parse(&format!("{APP}layout = \"releases\"\n")).unwrap();
        assert_eq!(config.apps[0].layout, Layout::Releases { keep: 5 });
        for (extra, field) in [
            ("keep_releases = 3\n", "keep_releases: only meaningful"),
            (
                "layout = \"releases\"\nkeep_releases = 1\n",
                "keep_releases: must be at least 2",
            ),
            (
                "layout = \"symlinks\"\n",
                "layout: \"symlinks\" is not one of",
            ),
        ] {
            let err = format!("{:#}", parse(&format!("{APP}{extra}")).unwrap_err());
            assert!(err.contains(field), "{err}");
        }
    }

    #[test]
    fn reload_adapters_are_one_of_touch_signal_exec_restart_and_the_container_ones_need_a_container(
    ) {
        let container = "[apps.container]\nimage = \"app:1\"\nmount = \"/code\"\n";
        let reload = |extra: &str| {
            parse(&format!("{APP}{extra}{container}")).map(|(c, _)| c.apps[0].reload.clone())
        };
        assert_eq!(
            reload("signal = \"hup\"\n").unwrap(),
            Reload::Signal("SIGHUP".into())
        );
        assert_eq!(
            reload("signal = \"SIGUSR2\"\n").unwrap(),
            Reload::Signal("SIGUSR2".into())
        );
        assert_eq!(
            reload("exec = [\"pm2\", \"reload\", \"all\"]\n").unwrap(),
            Reload::Exec(vec!["pm2".into(), "reload".into(), "all".into()])
        );
        assert_eq!(reload("restart = true\n").unwrap(), Reload::Restart);
        for (extra, field) in [
            ("signal = \"KILL\"\n", "signal: \"KILL\" is not one of"),
            ("exec = []\n", "exec: must be a non-empty command"),
            ("touch = \"a\"\nsignal = \"HUP\"\n", "set at most one"),
        ] {
            let err = format!("{:#}", reload(extra).unwrap_err());
            assert!(err.contains(field), "{err}");
        }
        // Without [apps.container], a container reload needs reload_container.
        let err = format!(
            "{:#}",
            parse(&format!("{APP}signal = \"HUP\"\n")).unwrap_err()
        );
        assert!(
            err.contains("reload_container: a signal, exec or restart reload needs a container"),
            "{err}"
        );
        let (config, _) = parse(&format!(
            "{APP}signal = \"HUP\"\nreload_container = \"web-1\"\n"
        ))
        .unwrap();
        assert_eq!(config.apps[0].reload_container.as_deref(), Some("web-1"));
    }

    #[test]
    fn swap_needs_a_container_releases_a_proxy_and_no_fixed_port_or_check() {
        let container = "[apps.container]\nimage = \"web:1\"\nmount = \"/app\"\n";
        let proxy = "[apps.proxy]\nlisten = \"127.0.0.1:8080\"\n";
        let releases = "layout = \"releases\"\nswap = true\n";
        let (config, _) = parse(&format!("{APP}{releases}{container}{proxy}")).unwrap();
        assert_eq!(config.apps[0].reload, Reload::Swap);
        for (text, want) in [
            (format!("{APP}swap = true\n{container}{proxy}"), "needs layout = \"releases\""),
            (format!("{APP}{releases}{proxy}"), "swap: needs [apps.container]"),
            (format!("{APP}{releases}{container}"), "swap: needs [apps.proxy]"),
            (
                format!("{APP}{releases}touch = \"uwsgi.ini\"\n{container}{proxy}"),
                "set at most one",
            ),
            (
                format!("{APP}{releases}{container}port = 8000\n{proxy}"),
                "remove container.port",
            ),
            (
                format!("{APP}{releases}{container}{proxy}[apps.check]\nurl = \"http://127.0.0.1:8000/\"\n"),
                "remove [apps.check]",
            ),
        ] {
            let err = format!("{:#}", parse(&text).unwrap_err());
            assert!(err.contains(want), "{text}\n→ {err}");
        }
    }

    #[test]
    fn poll_defaults_to_five_minutes_and_zero_turns_it_off() {
        let poll = |extra: &str| {
            parse(&format!("{APP}{extra}"))
                .map(|(c, _)| c.apps[0].poll)
                .map_err(|e| format!("{e:#}"))
        };
        assert_eq!(poll(""), Ok(DEFAULT_POLL));
        assert_eq!(DEFAULT_POLL, Duration::from_secs(300));
        assert_eq!(poll("poll = \"5m\"\n"), Ok(Duration::from_secs(300)));
        assert_eq!(poll("poll = \"1s\"\n"), Ok(Duration::from_secs(1)));
        assert_eq!(poll("poll = \"1h 30m\"\n"), Ok(Duration::from_secs(5400)));
        assert_eq!(poll("poll = \"0s\"\n"), Ok(Duration::ZERO));
        assert_eq!(poll("poll = 0\n"), Ok(Duration::ZERO));
    }

    #[test]
    fn only_an_app_that_polls_may_go_without_a_webhook_secret() {
        let bare = APP.replace("secret = \"s3cret\"\n", "");
        let (config, warnings) = parse(&bare).unwrap();
        assert!(config.apps[0].secret.is_none());
        assert!(
            warnings
                .iter()
                .any(|w| w.contains("no webhook secret") && w.contains("polling (every 5m)")),
            "{warnings:?}"
        );
        let err = format!(
            "{:#}",
            parse(&format!("{bare}poll = \"0s\"\n")).unwrap_err()
        );
        assert!(
            err.contains("apps[0] (web): secret: missing") && err.contains("must poll"),
            "{err}"
        );
        let (config, _) = parse(&format!("{APP}poll = \"0s\"\n")).unwrap();
        assert!(config.apps[0].secret.is_some());
    }

    #[test]
    fn bad_poll_intervals_are_refused_naming_the_field() {
        for (extra, want) in [
            (
                "poll = \"500ms\"\n",
                "poll: 500ms is too often; at least 1s",
            ),
            ("poll = \"1ns\"\n", "poll: 1ns is too often"),
            ("poll = 30\n", "poll: 30 has no unit"),
            ("poll = -1\n", "poll: -1 has no unit"),
            ("poll = \"soon\"\n", "poll: \"soon\" is not a duration"),
            ("poll = \"5\"\n", "poll: \"5\" is not a duration"),
            (
                "poll = true\n",
                "a duration such as \"5m\", or 0 to turn polling off",
            ),
        ] {
            let err = format!("{:#}", parse(&format!("{APP}{extra}")).unwrap_err());
            assert!(err.contains(want), "{extra:?}: {want:?} not in {err}");
        }
    }

    #[test]
    fn the_fast_path_check_probes_loopback_only() {
        let ok = "[apps.check]\nurl = \"http://127.0.0.1:8080/version\"\nexpect_body_contains = \"{sha}\"\n";
        let (config, _) = parse(&format!("{APP}{ok}")).unwrap();
        let check = config.apps[0].check.as_ref().unwrap();
        assert_eq!(check.deadline, Duration::from_secs(30));
        let far = "[apps.check]\nurl = \"http://example.com/version\"\n";
        let err = format!("{:#}", parse(&format!("{APP}{far}")).unwrap_err());
        assert!(err.contains("check: url"), "{err}");
    }
}
