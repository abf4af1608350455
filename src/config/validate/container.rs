//! `[apps.container]`: how the full path runs the app. Values from dockhand's environment and
//! files (`env_from_env`, `env_from_file`, the registry password) are read by `resolve`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

use crate::config::raw::{
    RawContainer, RawMount, DEFAULT_CONTAINER_WATCH, DEFAULT_FULL_PATHS, DEFAULT_HEALTH_DEADLINE,
    DEFAULT_HEALTH_FAILURES, DEFAULT_HEALTH_GRACE, DEFAULT_HEALTH_INTERVAL, DEFAULT_HEALTH_PATH,
    DEFAULT_HEALTH_TIMEOUT, DEFAULT_KEEP_IMAGES, DEFAULT_RESTART, DEFAULT_STOP_GRACE,
};
use crate::config::resolve::{self, absolute};
use crate::config::{compile_globs, ContainerConfig, Strategy};
use crate::runtime::{Credentials, Mount};

/// The container section, its checks in the order they have always run; errors name the key
/// (the caller puts `container` in front).
pub(super) fn validate_container(
    raw: RawContainer,
    base: &Path,
) -> anyhow::Result<ContainerConfig> {
    if raw.image.trim().is_empty() || raw.image.starts_with('-') {
        bail!("image: must be an image reference");
    }
    if !raw.mount.starts_with('/') {
        bail!(
            "mount: {:?} must be an absolute path inside the container",
            raw.mount
        );
    }
    let env = env(raw.env, raw.env_from_env, raw.env_from_file, base)?;
    if raw.cmd.as_ref().is_some_and(|c| c.is_empty()) {
        bail!("cmd: must not be empty (leave it out to use the image's)");
    }
    let mounts = mounts(raw.mounts, &raw.mount, base)?;
    let registry_auth = registry_auth(
        raw.registry_username,
        &raw.registry_password_env,
        &raw.registry_password_file,
        base,
    )?;
    let restart = restart(raw.restart)?;
    let health_path = raw
        .health_path
        .unwrap_or_else(|| DEFAULT_HEALTH_PATH.to_string());
    if !health_path.starts_with('/') {
        bail!("health_path: {health_path:?} must start with /");
    }
    let strategy = strategy(raw.strategy, raw.port)?;
    let full_paths = full_paths(raw.full_paths, raw.full_paths_extra)?;
    Ok(ContainerConfig {
        image: raw.image,
        mount: raw.mount,
        env,
        cmd: raw.cmd,
        mounts,
        restart,
        registry_auth,
        docker_config: resolve::docker_config(raw.docker_config, base),
        health_path,
        expect_body_contains: raw.expect_body_contains,
        health_grace: raw.health_grace.unwrap_or(DEFAULT_HEALTH_GRACE),
        health_interval: raw.health_interval.unwrap_or(DEFAULT_HEALTH_INTERVAL),
        health_timeout: raw.health_timeout.unwrap_or(DEFAULT_HEALTH_TIMEOUT),
        health_failures: raw.health_failures.unwrap_or(DEFAULT_HEALTH_FAILURES),
        health_deadline: raw.health_deadline.unwrap_or(DEFAULT_HEALTH_DEADLINE),
        stop_grace: raw.stop_grace.unwrap_or(DEFAULT_STOP_GRACE),
        port: raw.port,
        keep_images: raw.keep_images.unwrap_or(DEFAULT_KEEP_IMAGES).max(1),
        strategy,
        watch: raw.watch.unwrap_or(DEFAULT_CONTAINER_WATCH),
        full_paths,
    })
}

/// `env`, `env_from_env` and `env_from_file` together; none may set `PORT` (dockhand's) or be a
/// name Docker cannot take.
fn env(
    env: BTreeMap<String, String>,
    env_from_env: BTreeMap<String, String>,
    env_from_file: BTreeMap<String, PathBuf>,
    base: &Path,
) -> anyhow::Result<Vec<(String, String)>> {
    let env = resolve::container_env(env, env_from_env, env_from_file, base)?;
    if let Some((name, _)) = env
        .iter()
        .find(|(k, _)| k == "PORT" || k.is_empty() || k.contains('='))
    {
        bail!(
            "env: {name:?} cannot be set (PORT is dockhand's; names must be non-empty without '=')"
        );
    }
    Ok(env)
}

/// `mounts`: each target absolute and not the code volume's `mount`.
fn mounts(raw: Vec<RawMount>, code_mount: &str, base: &Path) -> anyhow::Result<Vec<Mount>> {
    let mut mounts = Vec::with_capacity(raw.len());
    for m in raw {
        if !m.target.starts_with('/') || m.target == code_mount {
            bail!(
                "mounts: target {:?} must be absolute and differ from mount",
                m.target
            );
        }
        mounts.push(Mount {
            source: absolute(base, &m.source),
            target: m.target,
            read_only: m.read_only,
        });
    }
    Ok(mounts)
}

/// `registry_username` with its password (env or file); a password without a username is a
/// mistake, not anonymous pulls.
fn registry_auth(
    username: Option<String>,
    password_env: &Option<String>,
    password_file: &Option<PathBuf>,
    base: &Path,
) -> anyhow::Result<Option<Credentials>> {
    let Some(username) = username else {
        if password_env.is_some() || password_file.is_some() {
            bail!("registry_username: missing, but a registry password is set");
        }
        return Ok(None);
    };
    let (password, _) = resolve::read_secret(
        &None,
        password_env,
        password_file,
        base,
        "registry_password",
    )?;
    let password = String::from_utf8(password.into_bytes())
        .map_err(|_| anyhow::anyhow!("registry_password: must be UTF-8"))?;
    Ok(Some(Credentials {
        username,
        password,
        server: None,
    }))
}

/// `restart`: one of Docker's restart policies, [`DEFAULT_RESTART`] when absent.
fn restart(raw: Option<String>) -> anyhow::Result<String> {
    let restart = raw.unwrap_or_else(|| DEFAULT_RESTART.to_string());
    if !matches!(
        restart.as_str(),
        "no" | "always" | "unless-stopped" | "on-failure"
    ) {
        bail!("restart: {restart:?} is not one of no, always, unless-stopped, on-failure");
    }
    Ok(restart)
}

/// `strategy`: start-first unless a fixed `port` (never 0) makes it stop-first; start-first
/// with a fixed port cannot work.
fn strategy(strategy: Option<Strategy>, port: Option<u16>) -> anyhow::Result<Strategy> {
    let strategy = match (strategy, port) {
        (Some(Strategy::StartFirst), Some(port)) => bail!(
            "strategy: start-first runs two containers at once, which cannot share the fixed port {port}; \
             remove port (a fresh loopback port per container) or use stop-first"
        ),
        (Some(s), _) => s,
        (None, Some(_)) => Strategy::StopFirst,
        (None, None) => Strategy::StartFirst,
    };
    if port == Some(0) {
        bail!("port: must not be 0");
    }
    Ok(strategy)
}

/// `full_paths` ([`DEFAULT_FULL_PATHS`] when absent) plus `full_paths_extra`, compiled.
pub(super) fn full_paths(
    raw: Option<Vec<String>>,
    extra: Vec<String>,
) -> anyhow::Result<globset::GlobSet> {
    let mut full_paths: Vec<String> = match raw {
        Some(list) => list,
        None => DEFAULT_FULL_PATHS.iter().map(|s| s.to_string()).collect(),
    };
    full_paths.extend(extra);
    compile_globs(&full_paths).context("full_paths")
}

#[cfg(test)]
mod tests {
    use crate::config::testing::{parse, APP};
    use crate::config::{
        Strategy, DEFAULT_CONTAINER_WATCH, DEFAULT_HEALTH_DEADLINE, DEFAULT_HEALTH_FAILURES,
        DEFAULT_HEALTH_GRACE, DEFAULT_HEALTH_INTERVAL, DEFAULT_HEALTH_PATH, DEFAULT_HEALTH_TIMEOUT,
        DEFAULT_KEEP_IMAGES, DEFAULT_RESTART, DEFAULT_STOP_GRACE,
    };

    #[test]
    fn a_minimal_container_gets_the_named_defaults_and_starts_first() {
        let container = "[apps.container]\nimage = \"web:1\"\nmount = \"/app\"\n";
        let (config, _) = parse(&format!("{APP}{container}")).unwrap();
        let c = config.apps[0].container.as_ref().unwrap();
        assert_eq!(c.restart, DEFAULT_RESTART);
        assert_eq!(c.health_path, DEFAULT_HEALTH_PATH);
        assert_eq!(
            (c.health_grace, c.health_interval, c.health_timeout),
            (
                DEFAULT_HEALTH_GRACE,
                DEFAULT_HEALTH_INTERVAL,
                DEFAULT_HEALTH_TIMEOUT
            )
        );
        assert_eq!(c.health_failures, DEFAULT_HEALTH_FAILURES);
        assert_eq!(c.health_deadline, DEFAULT_HEALTH_DEADLINE);
        assert_eq!(c.stop_grace, DEFAULT_STOP_GRACE);
        assert_eq!(c.keep_images, DEFAULT_KEEP_IMAGES);
        assert_eq!(c.watch, DEFAULT_CONTAINER_WATCH);
        assert_eq!(c.strategy, Strategy::StartFirst);
        assert!(c.full_paths.is_match("Dockerfile") && c.full_paths.is_match("sub/package.json"));
        assert!(!c.full_paths.is_match("app/views.py"));
    }

    #[test]
    fn container_keys_are_refused_naming_the_field() {
        let container = "[apps.container]\nimage = \"web:1\"\nmount = \"/app\"\n";
        for (extra, want) in [
            ("port = 0\n", "container: port: must not be 0"),
            (
                "restart = \"sometimes\"\n",
                "container: restart: \"sometimes\" is not one of",
            ),
            (
                "health_path = \"healthz\"\n",
                "container: health_path: \"healthz\" must start with /",
            ),
            (
                "env = { PORT = \"1\" }\n",
                "container: env: \"PORT\" cannot be set",
            ),
            (
                "registry_password_env = \"X\"\n",
                "container: registry_username: missing",
            ),
            (
                "strategy = \"start-first\"\nport = 8000\n",
                "container: strategy: start-first runs two containers at once",
            ),
        ] {
            let err = format!(
                "{:#}",
                parse(&format!("{APP}{container}{extra}")).unwrap_err()
            );
            assert!(err.contains(want), "{extra:?}: {want:?} not in {err}");
        }
    }
}
