//! `[github]` (how dockhand calls GitHub's REST API: `api_url`, and a token or a GitHub App)
//! and each app's `[apps.github]` (which repository and environment its deploys are recorded
//! in as GitHub deployments, and whether commits get a `dockhand/<app>` status).

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use reqwest::Url;
use serde::Deserialize;

use super::resolve::{self, absolute};
use crate::redact::Secret;

/// GitHub's API, unless `api_url` says (GitHub Enterprise Server: `https://HOST/api/v3`).
pub const DEFAULT_GITHUB_API_URL: &str = "https://api.github.com";
/// `[apps.github] deployments`.
pub const DEFAULT_GITHUB_DEPLOYMENTS: bool = true;
/// `[apps.github] commit_status`.
pub const DEFAULT_GITHUB_COMMIT_STATUS: bool = false;

/// `[github]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawGithub {
    pub api_url: Option<String>,
    pub token_env: Option<String>,
    pub token_file: Option<PathBuf>,
    pub app_id: Option<u64>,
    pub private_key_file: Option<PathBuf>,
    pub installation_id: Option<u64>,
}

/// `[apps.github]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAppGithub {
    pub repository: Option<String>,
    pub environment: Option<String>,
    pub deployments: Option<bool>,
    pub commit_status: Option<bool>,
    pub fetch_token: Option<bool>,
}

/// `[github]`, validated.
#[derive(Debug, Clone)]
pub struct GithubConfig {
    /// An http(s) URL with a host, without a trailing `/`.
    pub api_url: String,
    pub auth: GithubAuth,
}

/// How dockhand authenticates to GitHub. `Debug` shows no secret.
#[derive(Clone)]
pub enum GithubAuth {
    /// `token_env`: read once.
    Token(Secret),
    /// `token_file`: read at every call, so a rotated token needs no restart.
    TokenFile(PathBuf),
    /// A GitHub App: a JWT signed with its private key buys an installation token.
    App {
        app_id: u64,
        /// The PEM, checked to be an RSA private key at load.
        private_key: Secret,
        /// `None`: looked up from each app's repository.
        installation_id: Option<u64>,
    },
}

impl fmt::Debug for GithubAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GithubAuth::Token(_) => f.write_str("Token(<redacted>)"),
            GithubAuth::TokenFile(p) => f.debug_tuple("TokenFile").field(p).finish(),
            GithubAuth::App {
                app_id,
                installation_id,
                ..
            } => f
                .debug_struct("App")
                .field("app_id", app_id)
                .field("installation_id", installation_id)
                .finish_non_exhaustive(),
        }
    }
}

/// `[apps.github]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppGithub {
    pub owner: String,
    pub repo: String,
    /// The GitHub environment deploys are recorded in (default: the app's name).
    pub environment: String,
    /// Create a deployment per deploy and post its statuses.
    pub deployments: bool,
    /// Post a `dockhand/<app>` commit status per deploy.
    pub commit_status: bool,
    /// Fetch the app's `https://` origin with `[github]`'s token for this repository (a GitHub
    /// App's installation token, bought again before it expires), user `x-access-token`.
    pub fetch_token: bool,
}

/// Validate `[github]`.
pub(super) fn github(raw: RawGithub, base: &Path) -> anyhow::Result<GithubConfig> {
    let api_url = raw.api_url.as_deref().unwrap_or(DEFAULT_GITHUB_API_URL);
    let api_url = api_url.trim_end_matches('/').to_string();
    Url::parse(&api_url)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
        .with_context(|| {
            format!("github.api_url: {api_url:?} is not an http:// or https:// URL with a host")
        })?;
    let auth = match (&raw.token_env, &raw.token_file, raw.app_id) {
        (Some(_), None, None) => GithubAuth::Token(
            resolve::read_secret(&None, &raw.token_env, &None, base, "token")
                .context("github")?
                .0,
        ),
        (None, Some(file), None) => {
            // Read now so `check` and startup report a missing or empty file.
            resolve::read_secret(&None, &None, &raw.token_file, base, "token").context("github")?;
            GithubAuth::TokenFile(absolute(base, file))
        }
        (None, None, Some(app_id)) => {
            let Some(key) = &raw.private_key_file else {
                bail!("github.app_id: needs private_key_file (the App's .pem from its settings page)");
            };
            let (pem, _) = resolve::read_secret(&None, &None, &Some(key.clone()), base, "private_key")
                .context("github")?;
            jsonwebtoken::EncodingKey::from_rsa_pem(pem.expose()).map_err(|e| {
                anyhow::anyhow!(
                    "github.private_key_file {}: not an RSA private key in PEM ({e}); download the App's key again",
                    absolute(base, key).display()
                )
            })?;
            GithubAuth::App {
                app_id,
                private_key: pem,
                installation_id: raw.installation_id,
            }
        }
        (None, None, None) => bail!(
            "github: no credentials; set token_env or token_file (a token that may write deployments and statuses), or app_id + private_key_file (a GitHub App)"
        ),
        _ => bail!("github: token_env, token_file and app_id: set exactly one"),
    };
    if raw.private_key_file.is_some() && raw.app_id.is_none() {
        bail!("github.private_key_file: only with app_id (a GitHub App)");
    }
    if raw.installation_id.is_some() && raw.app_id.is_none() {
        bail!("github.installation_id: only with app_id (a GitHub App)");
    }
    Ok(GithubConfig { api_url, auth })
}

/// Validate an app's `[apps.github]`: the repository is `repository` there, else the app's own
/// `repository`, else the last two parts of its `repo` URL.
pub(super) fn app_github(
    raw: RawAppGithub,
    app: &str,
    repository: Option<&str>,
    repo_url: &str,
) -> anyhow::Result<AppGithub> {
    let named = raw
        .repository
        .as_deref()
        .or(repository)
        .map(str::to_string)
        .or_else(|| from_url(repo_url));
    let Some(named) = named else {
        bail!("github.repository: cannot tell it from repo; set repository = \"owner/name\"");
    };
    let (owner, repo) = named
        .split_once('/')
        .filter(|(o, r)| valid_part(o) && valid_part(r))
        .with_context(|| format!("github.repository: {named:?} is not \"owner/name\""))?;
    let environment = raw.environment.unwrap_or_else(|| app.to_string());
    if environment.is_empty()
        || environment.len() > 255
        || environment.chars().any(char::is_control)
    {
        bail!("github.environment: must be 1 to 255 characters, none a control character");
    }
    Ok(AppGithub {
        owner: owner.to_string(),
        repo: repo.to_string(),
        environment,
        deployments: raw.deployments.unwrap_or(DEFAULT_GITHUB_DEPLOYMENTS),
        commit_status: raw.commit_status.unwrap_or(DEFAULT_GITHUB_COMMIT_STATUS),
        fetch_token: raw.fetch_token.unwrap_or(false),
    })
}

/// `owner/name` from the last two parts of an origin URL (`https://github.com/o/n.git`,
/// `git@github.com:o/n.git`).
pub(super) fn from_url(url: &str) -> Option<String> {
    let remote = url.contains("://") || url.split_once(':').is_some_and(|(h, _)| h.contains('@'));
    if !remote {
        return None;
    }
    let path = url.trim_end_matches('/');
    let path = path.strip_suffix(".git").unwrap_or(path);
    let mut parts = path.rsplit(['/', ':']);
    let name = parts.next()?;
    let owner = parts.next()?;
    (valid_part(owner) && valid_part(name)).then(|| format!("{owner}/{name}"))
}

/// An owner or repository name as GitHub allows them (letters, digits, `-`, `_`, `.`).
fn valid_part(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 100
        && s != "."
        && s != ".."
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::testing::{parse, APP};

    fn error(text: &str) -> String {
        format!("{:#}", parse(text).unwrap_err())
    }

    #[test]
    fn a_misconfigured_integration_is_refused_naming_what_to_set() {
        let app = format!("{APP}[apps.github]\n");
        assert!(
            error(&app).contains("needs a [github] section"),
            "{}",
            error(&app)
        );
        let none = format!("{app}[github]\n");
        assert!(error(&none).contains("no credentials"), "{}", error(&none));
        let both = format!("{app}[github]\ntoken_env = \"PATH\"\napp_id = 1\n");
        assert!(error(&both).contains("set exactly one"), "{}", error(&both));
        let keyless = format!("{app}[github]\napp_id = 1\n");
        assert!(
            error(&keyless).contains("needs private_key_file"),
            "{}",
            error(&keyless)
        );
        let url = format!("{app}[github]\ntoken_env = \"PATH\"\napi_url = \"ftp://x\"\n");
        assert!(error(&url).contains("github.api_url"), "{}", error(&url));
        let bad_key = std::env::temp_dir().join("dockhand-test-not-a-key.pem");
        std::fs::write(&bad_key, "not a key").unwrap();
        let key = format!(
            "{app}[github]\napp_id = 1\nprivate_key_file = \"{}\"\n",
            bad_key.display()
        );
        assert!(
            error(&key).contains("not an RSA private key"),
            "{}",
            error(&key)
        );
        let (config, _) = parse(&format!("{app}[github]\ntoken_env = \"PATH\"\n")).unwrap();
        let github = config.apps[0].github.as_ref().unwrap();
        assert_eq!(
            (github.owner.as_str(), github.repo.as_str()),
            ("Acme", "Web")
        );
        assert_eq!(config.github.unwrap().api_url, DEFAULT_GITHUB_API_URL);
    }

    fn raw(repository: Option<&str>) -> RawAppGithub {
        RawAppGithub {
            repository: repository.map(str::to_string),
            environment: None,
            deployments: None,
            commit_status: None,
            fetch_token: None,
        }
    }

    #[test]
    fn fetch_token_needs_an_https_origin_and_no_credentials_of_the_apps_own() {
        let gh = "[apps.github]\nfetch_token = true\n[github]\ntoken_env = \"PATH\"\n";
        let (config, _) = parse(&format!("{APP}{gh}")).unwrap();
        assert!(config.apps[0].github.as_ref().unwrap().fetch_token);
        let ssh = APP.replace(
            "https://github.com/Acme/Web.git",
            "git@github.com:Acme/Web.git",
        );
        let e = error(&format!("{ssh}{gh}"));
        assert!(
            e.contains("github.fetch_token: repo") && e.contains("not an https:// URL"),
            "{e}"
        );
        let own = APP.replace("volume =", "token_env = \"PATH\"\nvolume =");
        let e = error(&format!("{own}{gh}"));
        assert!(e.contains("credentials of its own"), "{e}");
        let user = APP.replace("https://github.com", "https://me:pw@github.com");
        let e = error(&format!("{user}{gh}"));
        assert!(
            e.contains("credentials of its own") && !e.contains("pw@"),
            "{e}"
        );
    }

    #[test]
    fn the_repository_comes_from_the_section_the_app_or_its_url() {
        let from = |r, own, url| {
            app_github(raw(r), "web", own, url).map(|g| format!("{}/{}", g.owner, g.repo))
        };
        assert_eq!(from(Some("a/b"), Some("c/d"), "x").unwrap(), "a/b");
        assert_eq!(from(None, Some("c/d"), "x").unwrap(), "c/d");
        assert_eq!(
            from(None, None, "https://github.com/acme/web.git").unwrap(),
            "acme/web"
        );
        assert_eq!(
            from(None, None, "git@github.com:acme/web.git").unwrap(),
            "acme/web"
        );
        let err = from(None, None, "/srv/origin").unwrap_err().to_string();
        assert!(
            err.contains("owner/name") || err.contains("cannot tell"),
            "{err}"
        );
        assert!(from(Some("a/b/c"), None, "x").is_err());
        assert!(from(Some("a/../b"), None, "x").is_err());
        let g = app_github(raw(Some("a/b")), "web", None, "x").unwrap();
        assert_eq!(
            (g.environment.as_str(), g.deployments, g.commit_status),
            ("web", true, false)
        );
    }
}
