//! The API tokens (`[[tokens]]`): who may call the operations API, for which apps.
//!
//! A token is read once at startup (from an env var or a file, by `resolve`) and kept only as
//! its SHA-256 digest, so neither its value nor its length can leak through `Debug`, a log line
//! or the timing of a comparison.

use std::collections::HashSet;
use std::fmt;
use std::path::Path;

use anyhow::{bail, Context};

use super::raw::{RawServer, RawToken};
use super::resolve;
use super::validate::check_entry_name;

/// One `[[tokens]]` entry: who may call the API for which apps. `Debug` never shows the token.
#[derive(Debug, Clone)]
pub struct ApiToken {
    /// Recorded as the `actor` of every deploy the token causes.
    pub name: String,
    /// SHA-256 of the token: every comparison is over 32 bytes, so neither a byte nor the
    /// token's length leaks through timing.
    pub digest: TokenDigest,
    pub scope: TokenScope,
    /// `read_only = true`: may read (the read API, the dashboard) but every write answers 403.
    pub read_only: bool,
}

/// The SHA-256 of an API token. `Debug` redacted.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenDigest(pub [u8; 32]);

impl TokenDigest {
    /// The digest of a presented or configured token.
    pub fn of(token: &[u8]) -> TokenDigest {
        use sha2::Digest as _;
        TokenDigest(sha2::Sha256::digest(token).into())
    }
}

impl fmt::Debug for TokenDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenDigest(<redacted>)")
    }
}

/// The apps a token may act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenScope {
    /// `apps = ["*"]`.
    All,
    Apps(Vec<String>),
}

impl ApiToken {
    /// Whether this token may act on app `name`.
    pub fn may(&self, app: &str) -> bool {
        match &self.scope {
            TokenScope::All => true,
            TokenScope::Apps(apps) => apps.iter().any(|a| a == app),
        }
    }
}

/// `server.metrics_token_env` / `metrics_token_file` (at most one): the bearer token a scraper
/// sends for `/metrics`, as its digest; `None` when neither is set (`/metrics` is open).
pub(super) fn metrics_token(raw: &RawServer, base: &Path) -> anyhow::Result<Option<TokenDigest>> {
    let (env, file) = (&raw.metrics_token_env, &raw.metrics_token_file);
    match (env, file) {
        (None, None) => return Ok(None),
        (Some(_), Some(_)) => bail!(
            "server.metrics_token_env and server.metrics_token_file are both set: keep one \
             (the token Prometheus sends as `Authorization: Bearer <token>`)"
        ),
        _ => {}
    }
    let (secret, _) = resolve::read_secret(&None, env, file, base, "metrics_token")
        .context("server: the metrics token could not be read; set it, or remove the key to leave /metrics open")?;
    if secret.expose().iter().any(|b| !b.is_ascii_graphic()) {
        bail!(
            "server.metrics_token: must be printable ASCII without spaces (it is sent in a header)"
        );
    }
    Ok(Some(TokenDigest::of(secret.expose())))
}

/// Tokens shorter than this get a `check` warning.
const SHORT_TOKEN: usize = 16;

/// The `[[tokens]]`, each read and checked: a valid distinct name, a distinct printable value,
/// and apps that exist (`app_names`) or `["*"]`. Errors name the token (`tokens[1] (ci).apps: …`).
pub(super) fn validate_tokens(
    raw: Vec<RawToken>,
    app_names: &HashSet<String>,
    base: &Path,
    warnings: &mut Vec<String>,
) -> anyhow::Result<Vec<ApiToken>> {
    let mut tokens: Vec<ApiToken> = Vec::with_capacity(raw.len());
    for (i, t) in raw.into_iter().enumerate() {
        let label = format!("tokens[{i}] ({})", t.name);
        check_entry_name(&label, &t.name, tokens.iter().map(|o| o.name.as_str()))?;
        let (secret, _) = resolve::read_secret(&None, &t.token_env, &t.token_file, base, "token")
            .with_context(|| label.clone())?;
        let value = secret.expose();
        if value.iter().any(|b| !b.is_ascii_graphic()) {
            bail!("{label}: the token must be printable ASCII without spaces (it is sent in a header)");
        }
        if value.len() < SHORT_TOKEN {
            warnings.push(format!(
                "{label}: the token is shorter than {SHORT_TOKEN} characters; use e.g. `openssl rand -hex 32`"
            ));
        }
        let digest = TokenDigest::of(value);
        if let Some(other) = tokens.iter().find(|o| o.digest == digest) {
            bail!(
                "{label}: the same token as {:?}; each token must be distinct so the actor is known",
                other.name
            );
        }
        let scope = scope(&label, t.apps, app_names)?;
        tokens.push(ApiToken {
            name: t.name,
            digest,
            scope,
            read_only: t.read_only,
        });
    }
    Ok(tokens)
}

/// `apps = ["*"]` (alone) or a non-empty list of configured apps.
fn scope(
    label: &str,
    apps: Vec<String>,
    app_names: &HashSet<String>,
) -> anyhow::Result<TokenScope> {
    Ok(if apps.iter().any(|a| a == "*") {
        if apps.len() > 1 {
            bail!("{label}.apps: \"*\" stands alone (it already means every app)");
        }
        TokenScope::All
    } else {
        if apps.is_empty() {
            bail!("{label}.apps: empty; name apps, or [\"*\"] for every app");
        }
        if let Some(unknown) = apps.iter().find(|a| !app_names.contains(*a)) {
            bail!("{label}.apps: unknown app {unknown:?}");
        }
        TokenScope::Apps(apps)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::testing::{parse, APP};
    use crate::config::Config;

    fn with_tokens(tokens: &str) -> anyhow::Result<(Config, Vec<String>)> {
        std::env::set_var("DOCKHAND_TEST_TOKEN_A", "token-a-0123456789abcdef");
        std::env::set_var("DOCKHAND_TEST_TOKEN_B", "token-b-0123456789abcdef");
        std::env::set_var("DOCKHAND_TEST_TOKEN_EMPTY", " ");
        parse(&format!("{APP}{tokens}"))
    }

    const TOKEN_A: &str =
        "[[tokens]]\nname = \"ci\"\ntoken_env = \"DOCKHAND_TEST_TOKEN_A\"\napps = [\"*\"]\n";

    #[test]
    fn tokens_are_read_scoped_and_never_shown_in_debug() {
        let (config, warnings) = with_tokens(&format!(
            "{TOKEN_A}[[tokens]]\nname = \"ops\"\ntoken_env = \"DOCKHAND_TEST_TOKEN_B\"\napps = [\"web\"]\n"
        ))
        .unwrap();
        assert_eq!(config.tokens.len(), 2);
        assert_eq!(config.tokens[0].scope, TokenScope::All);
        assert!(config.tokens[1].may("web") && !config.tokens[1].may("other"));
        assert!(config.apps[0].lock_on_rollback);
        let debug = format!("{config:?}");
        assert!(
            !debug.contains("token-a") && !debug.contains("token-b"),
            "{debug}"
        );
        assert!(
            !warnings.iter().any(|w| w.contains("tokens")),
            "{warnings:?}"
        );
    }

    #[test]
    fn bad_tokens_are_refused_naming_the_field() {
        let cases = [
            (
                TOKEN_A.replace("[\"*\"]", "[\"nope\"]"),
                "tokens[0] (ci).apps: unknown app \"nope\"",
            ),
            (
                TOKEN_A.replace("[\"*\"]", "[]"),
                "tokens[0] (ci).apps: empty",
            ),
            (
                TOKEN_A.replace("DOCKHAND_TEST_TOKEN_A", "DOCKHAND_TEST_TOKEN_EMPTY"),
                "token_env: the token is empty",
            ),
            (
                TOKEN_A.replace("DOCKHAND_TEST_TOKEN_A", "DOCKHAND_TEST_SURELY_UNSET"),
                "token_env: environment variable DOCKHAND_TEST_SURELY_UNSET is not set",
            ),
            (
                format!("{TOKEN_A}{TOKEN_A}"),
                "tokens[1] (ci).name: duplicate",
            ),
            (
                format!("{TOKEN_A}{}", TOKEN_A.replace("\"ci\"", "\"other\"")),
                "the same token as \"ci\"",
            ),
            (TOKEN_A.replace("\"ci\"", "\"-x\""), "tokens[0] (-x).name"),
        ];
        for (tokens, expected) in cases {
            let err = format!("{:#}", with_tokens(&tokens).unwrap_err());
            assert!(err.contains(expected), "{expected:?} not in {err:?}");
        }
    }

    /// `[server]` with `extra` lines, and the one app.
    fn server(extra: &str) -> anyhow::Result<(Config, Vec<String>)> {
        let text = format!("[server]\nstate_dir = \"/var/lib/dockhand-test\"\n{extra}\n{APP}");
        Config::parse(&text, &std::env::temp_dir())
    }

    /// `[server]` with `extra` is refused, the error saying each of `wanted`.
    fn refused(extra: &str, wanted: &[&str]) {
        let e = format!("{:#}", server(extra).expect_err(extra));
        for w in wanted {
            assert!(e.contains(w), "{w:?} not in {e:?}");
        }
    }

    #[test]
    fn metrics_are_on_the_api_listener_and_open_unless_configured() {
        let (config, _) = server("").unwrap();
        assert_eq!(config.server.metrics_listen, None);
        assert!(config.server.metrics_token.is_none());
    }

    #[test]
    fn a_metrics_listener_and_token_are_read_and_the_token_never_shown() {
        std::env::set_var("DOCKHAND_TEST_METRICS_TOKEN", "scrape-0123456789abcdef");
        let (config, _) = server(
            "metrics_listen = \"127.0.0.1:9700\"\nmetrics_token_env = \"DOCKHAND_TEST_METRICS_TOKEN\"",
        )
        .unwrap();
        assert_eq!(
            config.server.metrics_listen,
            Some("127.0.0.1:9700".parse().unwrap())
        );
        assert_eq!(
            config.server.metrics_token,
            Some(TokenDigest::of(b"scrape-0123456789abcdef"))
        );
        assert!(!format!("{config:?}").contains("scrape-0123"));

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("metrics-token");
        std::fs::write(&file, "from-a-file-0123456789\n").unwrap();
        let (config, _) = server(&format!("metrics_token_file = \"{}\"", file.display())).unwrap();
        assert_eq!(
            config.server.metrics_token,
            Some(TokenDigest::of(b"from-a-file-0123456789"))
        );
    }

    #[test]
    fn open_metrics_beyond_this_host_are_warned_about_until_a_token_guards_them() {
        let open = "metrics_listen = \"0.0.0.0:9700\"";
        let (_, warnings) = server(open).unwrap();
        assert!(
            warnings
                .iter()
                .any(|w| w.contains("server.metrics_listen 0.0.0.0:9700 is reachable")),
            "{warnings:?}"
        );
        std::env::set_var("DOCKHAND_TEST_METRICS_TOKEN", "scrape-0123456789abcdef");
        let guarded = format!("{open}\nmetrics_token_env = \"DOCKHAND_TEST_METRICS_TOKEN\"");
        let (_, warnings) = server(&guarded).unwrap();
        assert!(
            !warnings.iter().any(|w| w.contains("metrics_listen")),
            "{warnings:?}"
        );
    }

    #[test]
    fn an_unparsable_metrics_address_fails_naming_the_key() {
        refused(
            "metrics_listen = \"localhost-ish\"",
            &["metrics_listen", "socket address"],
        );
    }

    #[test]
    fn the_metrics_listener_may_not_be_the_api_listener() {
        refused(
            "listen = \"127.0.0.1:8700\"\nmetrics_listen = \"127.0.0.1:8700\"",
            &["server.metrics_listen", "leave metrics_listen out"],
        );
    }

    #[test]
    fn a_metrics_token_from_both_env_and_file_is_refused_saying_keep_one() {
        refused(
            "metrics_token_env = \"DOCKHAND_TEST_METRICS_TOKEN\"\nmetrics_token_file = \"/nonexistent\"",
            &["metrics_token_env and server.metrics_token_file are both set: keep one"],
        );
    }

    #[test]
    fn a_missing_metrics_token_variable_or_file_fails_naming_it_and_what_to_do() {
        refused(
            "metrics_token_env = \"DOCKHAND_TEST_NO_SUCH_METRICS_TOKEN\"",
            &[
                "metrics_token_env: environment variable DOCKHAND_TEST_NO_SUCH_METRICS_TOKEN is not set",
                "remove the key to leave /metrics open",
            ],
        );
        refused(
            "metrics_token_file = \"/nonexistent/metrics-token\"",
            &["metrics_token_file: cannot read /nonexistent/metrics-token"],
        );
    }
}
