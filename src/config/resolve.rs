//! The only I/O of loading a config: secrets and credentials read from environment variables
//! and files, paths made absolute and resolved through the filesystem, directories and files
//! looked at (existence, permissions).
//!
//! `validate` calls in here, in the order the checks have always run, so the first error in a
//! config is the one reported; everything else it does is pure. Errors name the field, as
//! `validate`'s do.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Context};

use super::raw::{RawApp, DEFAULT_DOCKER_CONFIG_DIR};
use crate::git::Credentials;
use crate::redact::Secret;

/// `path`, relative ones taken from `base` (the config file's directory).
pub(super) fn absolute(base: &Path, path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        base.join(path)
    }
}

/// `path` as the filesystem resolves it: `.` and `..` folded, and the longest existing
/// prefix's symlinks resolved (what does not exist yet is kept as written).
pub(super) fn resolved(path: &Path) -> PathBuf {
    let mut folded = PathBuf::new();
    for c in path.components() {
        match c {
            Component::ParentDir => {
                folded.pop();
            }
            Component::CurDir => {}
            other => folded.push(other),
        }
    }
    let mut existing = folded.as_path();
    let mut rest = Vec::new();
    loop {
        if let Ok(real) = std::fs::canonicalize(existing) {
            return rest.iter().rev().fold(real, |p, c| p.join(c));
        }
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_owned());
                existing = parent;
            }
            _ => return folded,
        }
    }
}

/// Exactly one of inline / env / file; never empty. Returns the secret and whether it was inline.
pub(super) fn read_secret(
    inline: &Option<String>,
    env: &Option<String>,
    file: &Option<PathBuf>,
    base: &Path,
    what: &str,
) -> anyhow::Result<(Secret, bool)> {
    let (value, field) = match (inline, env, file) {
        (Some(s), None, None) => (s.clone().into_bytes(), what.to_string()),
        (None, Some(var), None) => {
            let v = std::env::var(var)
                .with_context(|| format!("{what}_env: environment variable {var} is not set"))?;
            (v.into_bytes(), format!("{what}_env"))
        }
        (None, None, Some(path)) => {
            let path = absolute(base, path);
            let mut v = std::fs::read(&path)
                .with_context(|| format!("{what}_file: cannot read {}", path.display()))?;
            while v.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                v.pop();
            }
            (v, format!("{what}_file"))
        }
        (None, None, None) => bail!("{what}: missing; set {what}_env or {what}_file"),
        _ => bail!("{what}, {what}_env and {what}_file: set exactly one"),
    };
    if value.iter().all(|b| b.is_ascii_whitespace()) {
        bail!("{field}: the {what} is empty (an empty secret would let anyone deploy)");
    }
    Ok((Secret::new(value), inline.is_some()))
}

/// `server.hooks_dir`: it must exist (a hook the operator wrote must never silently not run).
pub(super) fn check_hooks_dir(dir: &Path) -> anyhow::Result<()> {
    if !dir.is_dir() {
        bail!(
            "server.hooks_dir: {} does not exist or is not a directory",
            dir.display()
        );
    }
    Ok(())
}

/// `volume`: its parent must exist, and the volume, if it exists, must be a directory.
pub(super) fn check_volume(volume: &Path) -> anyhow::Result<()> {
    match volume.parent() {
        Some(parent) if parent.is_dir() => {}
        _ => bail!(
            "volume: parent directory of {} does not exist or is not readable",
            volume.display()
        ),
    }
    if volume.exists() && !volume.is_dir() {
        bail!("volume: {} exists and is not a directory", volume.display());
    }
    Ok(())
}

/// How the app's fetches authenticate (`token_env`, `token_file`, `ssh_key`: at most one). The
/// token file is only checked here: it is read again at every fetch, so a rotated token needs no
/// restart.
pub(super) fn credentials(raw: &RawApp, base: &Path) -> anyhow::Result<Credentials> {
    Ok(match (&raw.token_env, &raw.token_file, &raw.ssh_key) {
        (None, None, None) => Credentials::None,
        (None, None, Some(key)) => {
            let key = absolute(base, key);
            std::fs::metadata(&key)
                .with_context(|| format!("ssh_key: cannot read {}", key.display()))?;
            crate::git::check_ssh_key(&key)?;
            Credentials::SshKey(key)
        }
        (Some(_), None, None) => {
            let (token, _) = read_secret(&None, &raw.token_env, &None, base, "token")?;
            let token = String::from_utf8(token.into_bytes())
                .map_err(|_| anyhow::anyhow!("token: must be UTF-8"))?;
            Credentials::Token(token.trim().to_string())
        }
        (None, Some(file), None) => {
            // Read now so `check` and startup report a missing or empty file.
            let (token, _) = read_secret(&None, &None, &raw.token_file, base, "token")?;
            String::from_utf8(token.into_bytes())
                .map_err(|_| anyhow::anyhow!("token_file: must be UTF-8"))?;
            Credentials::TokenFile(absolute(base, file))
        }
        _ => bail!("token_env, token_file and ssh_key: set at most one"),
    })
}

/// `ca_file`, made absolute, once it was read and found to hold PEM certificates.
pub(super) fn ca_file(file: Option<&PathBuf>, base: &Path) -> anyhow::Result<Option<PathBuf>> {
    let ca_file = file.map(|f| absolute(base, f));
    if let Some(f) = &ca_file {
        let pem =
            std::fs::read(f).with_context(|| format!("ca_file: cannot read {}", f.display()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| anyhow::anyhow!("ca_file {}: not PEM certificates: {e}", f.display()))?;
        if certs.is_empty() {
            bail!("ca_file {}: holds no PEM certificate", f.display());
        }
    }
    Ok(ca_file)
}

/// `known_hosts`, made absolute, once it was found readable.
pub(super) fn known_hosts(file: Option<&PathBuf>, base: &Path) -> anyhow::Result<Option<PathBuf>> {
    let known_hosts = file.map(|f| absolute(base, f));
    if let Some(f) = &known_hosts {
        std::fs::metadata(f)
            .with_context(|| format!("known_hosts: cannot read {}", f.display()))?;
    }
    Ok(known_hosts)
}

/// A container's environment: the plain `env`, then `env_from_env` read from dockhand's own
/// environment, then `env_from_file` read from files (a trailing newline dropped).
pub(super) fn container_env(
    env: BTreeMap<String, String>,
    env_from_env: BTreeMap<String, String>,
    env_from_file: BTreeMap<String, PathBuf>,
    base: &Path,
) -> anyhow::Result<Vec<(String, String)>> {
    let mut all: Vec<(String, String)> = env.into_iter().collect();
    for (name, var) in env_from_env {
        let value = std::env::var(&var).with_context(|| {
            format!("env_from_env.{name}: environment variable {var} is not set")
        })?;
        all.push((name, value));
    }
    for (name, file) in env_from_file {
        let file = absolute(base, &file);
        let value = std::fs::read_to_string(&file)
            .with_context(|| format!("env_from_file.{name}: cannot read {}", file.display()))?;
        all.push((name, value.trim_end_matches(['\n', '\r']).to_string()));
    }
    Ok(all)
}

/// Docker's `config.json`: `docker_config` if set, else where the `docker` CLI looks
/// (`$DOCKER_CONFIG`, `~/.docker`, [`DEFAULT_DOCKER_CONFIG_DIR`]).
pub(super) fn docker_config(configured: Option<PathBuf>, base: &Path) -> PathBuf {
    match configured {
        Some(path) => absolute(base, &path),
        None => std::env::var_os("DOCKER_CONFIG")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker")))
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DOCKER_CONFIG_DIR))
            .join("config.json"),
    }
}

/// What `check` says about files others could read or write: a secret readable by every user,
/// a hooks directory or hook that someone other than its owner may change (it runs as dockhand).
pub(super) fn permission_warnings(
    secrets: &[(String, PathBuf)],
    hooks_dir: Option<&Path>,
) -> Vec<String> {
    let mode = |p: &Path| std::fs::metadata(p).ok().map(|m| m.permissions().mode());
    let mut warnings = Vec::new();
    for (what, file) in secrets {
        if mode(file).is_some_and(|m| m & 0o004 != 0) {
            warnings.push(format!(
                "{what} {} is readable by every user on this host: chmod o-r (600 or 640)",
                file.display()
            ));
        }
    }
    let Some(dir) = hooks_dir else {
        return warnings;
    };
    // hooks_dir/<stage> and hooks_dir/<app>/<stage>, and the directories between.
    fn walk(d: &Path, depth: usize, found: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(d) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            found.push(p.clone());
            if depth > 0 && p.is_dir() {
                walk(&p, depth - 1, found);
            }
        }
    }
    let mut check = vec![dir.to_path_buf()];
    walk(dir, 1, &mut check);
    for p in check {
        if mode(&p).is_some_and(|m| m & 0o022 != 0) {
            warnings.push(format!(
                "{} (under hooks_dir) is writable by group or others: whoever can write it runs code \
                 as dockhand; chmod go-w",
                p.display()
            ));
        }
    }
    warnings
}

#[cfg(test)]
mod tests {
    use crate::config::testing::{parse, APP};
    use crate::config::Config;

    #[test]
    fn volumes_may_not_overlap_each_other_the_state_dir_or_hooks_even_through_dotdot_or_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("state")).unwrap();
        std::fs::create_dir_all(root.join("srv/web/hooks")).unwrap();
        std::os::unix::fs::symlink(root.join("state"), root.join("looks-elsewhere")).unwrap();
        std::os::unix::fs::symlink(root.join("srv/web/hooks"), root.join("hooks")).unwrap();
        let app = |name: &str, volume: &str| {
            format!(
                "[[apps]]\nname = \"{name}\"\nrepo = \"https://github.com/Acme/Web.git\"\n\
                 secret = \"s3cret\"\nvolume = \"{volume}\"\n"
            )
        };
        let config = |server_extra: &str, apps: &str| {
            let text = format!(
                "[server]\nstate_dir = \"{}\"\n{server_extra}{apps}",
                root.join("state").display()
            );
            Config::parse(&text, root)
                .map(|_| ())
                .map_err(|e| format!("{e:#}"))
        };
        let web = root.join("srv/web");
        let web = web.display();

        assert!(config("", &app("web", &web.to_string())).is_ok());
        let err = config(
            "",
            &format!(
                "{}{}",
                app("web", &web.to_string()),
                app("api", &web.to_string())
            ),
        )
        .unwrap_err();
        assert!(err.contains("overlaps app web's volume"), "{err}");
        let nested = format!("{web}/static");
        let err = config(
            "",
            &format!("{}{}", app("web", &web.to_string()), app("api", &nested)),
        )
        .unwrap_err();
        assert!(err.contains("overlaps app web's volume"), "{err}");
        let dotdot = format!("{web}/../../state/inside");
        let err = config("", &app("web", &dotdot)).unwrap_err();
        assert!(err.contains("must not overlap server.state_dir"), "{err}");
        let through_link = format!("{}/looks-elsewhere/apps", root.display());
        let err = config("", &app("web", &through_link)).unwrap_err();
        assert!(err.contains("must not overlap server.state_dir"), "{err}");
        // hooks_dir is a symlink into the volume: the repository's hooks/ would run as dockhand.
        let hooks = format!("hooks_dir = \"{}/hooks\"\n", root.display());
        let err = config(&hooks, &app("web", &web.to_string())).unwrap_err();
        assert!(err.contains("must not overlap server.hooks_dir"), "{err}");
    }

    #[test]
    fn check_warns_about_readable_secrets_writable_hooks_and_an_api_beyond_loopback() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret");
        std::fs::write(&secret, "s3cret-value").unwrap();
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
        let hooks = dir.path().join("hooks");
        std::fs::create_dir_all(hooks.join("web")).unwrap();
        let hook = hooks.join("web/post-deploy");
        std::fs::write(&hook, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o777)).unwrap();
        let text = |listen: &str| {
            format!(
                "[server]\nlisten = \"{listen}\"\nstate_dir = \"{}/state\"\nhooks_dir = \"{}\"\n\
                 [[apps]]\nname = \"web\"\nrepo = \"https://github.com/Acme/Web.git\"\n\
                 secret_file = \"{}\"\nvolume = \"{}/volume\"\n",
                dir.path().display(),
                hooks.display(),
                secret.display(),
                dir.path().display()
            )
        };
        let (_, warnings) = Config::parse(&text("0.0.0.0:9000"), dir.path()).unwrap();
        let all = warnings.join("\n");
        assert!(
            all.contains("secret_file") && all.contains("readable by every user"),
            "{all}"
        );
        assert!(
            all.contains("post-deploy") && all.contains("writable by group or others"),
            "{all}"
        );
        assert!(
            all.contains("0.0.0.0:9000 is reachable beyond this host"),
            "{all}"
        );

        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
        let (_, warnings) = Config::parse(&text("127.0.0.1:9000"), dir.path()).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
    }

    #[test]
    fn empty_secret_is_refused() {
        let err = parse(&APP.replace("s3cret", " ")).unwrap_err();
        assert!(format!("{err:#}").contains("empty"), "{err:#}");
    }

    #[test]
    fn missing_secret_env_names_the_variable() {
        let text = APP.replace(
            "secret = \"s3cret\"",
            "secret_env = \"DOCKHAND_TEST_SURELY_UNSET\"",
        );
        let err = parse(&text).unwrap_err();
        assert!(
            format!("{err:#}").contains("DOCKHAND_TEST_SURELY_UNSET"),
            "{err:#}"
        );
    }
}
