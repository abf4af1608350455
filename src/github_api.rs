//! GitHub's REST API as dockhand calls it (GitHub deployments and commit statuses, and the
//! token of `[apps.github] fetch_token`): the headers GitHub documents (`Accept: application/vnd.github+json`,
//! `X-GitHub-Api-Version`, a `User-Agent`), a bearer token — `[github] token_env` /
//! `token_file` (re-read at every call), or a GitHub App's installation token, bought with an
//! RS256 JWT and bought again 5 minutes before it expires — and GitHub's answers sorted into
//! worth retrying (5xx, 429, a rate limit with when it resets, a network error) or not.

use std::collections::HashMap;
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderValue, ACCEPT, AUTHORIZATION, RETRY_AFTER};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use time::OffsetDateTime;
use tokio::sync::Mutex;

use crate::config::{GithubAuth, GithubConfig};

/// The REST API version dockhand is written against.
pub const API_VERSION: &str = "2022-11-28";
/// How long one call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(15);
/// An installation token with less than this left is not used: a new one is bought.
const REFRESH_BEFORE: Duration = Duration::from_secs(300);
/// The longest a rate limit's reset is waited for before trying again.
const MAX_WAIT: Duration = Duration::from_secs(3600);

/// Why a call did not work.
#[derive(Debug)]
pub enum Failure {
    /// Try again, no sooner than `after` when GitHub said (`Retry-After`, a rate limit reset).
    Retry {
        error: String,
        after: Option<Duration>,
    },
    /// Trying again would get the same answer (a 404, a 422).
    Final(String),
}

impl Failure {
    pub fn retry(error: String) -> Failure {
        Failure::Retry { error, after: None }
    }

    /// What went wrong, as said to people.
    pub fn message(&self) -> &str {
        match self {
            Failure::Retry { error, .. } | Failure::Final(error) => error,
        }
    }
}

/// A repository, as the API's paths name it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Repo {
    pub owner: String,
    pub name: String,
}

/// A bought installation token.
struct Installation {
    token: String,
    expires: OffsetDateTime,
}

/// One client for every app with `[apps.github]`.
pub struct Client {
    http: reqwest::Client,
    api: String,
    auth: GithubAuth,
    /// A GitHub App's key, parsed once.
    key: Option<jsonwebtoken::EncodingKey>,
    /// Installation ids by repository, when `installation_id` is not configured.
    installation_ids: Mutex<HashMap<Repo, u64>>,
    /// Installation tokens by installation id.
    tokens: Mutex<HashMap<u64, Installation>>,
}

impl Client {
    pub fn new(config: &GithubConfig) -> anyhow::Result<Client> {
        let http = reqwest::Client::builder()
            .timeout(CALL_TIMEOUT)
            // A token goes to the configured API and nowhere else.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("dockhand/", env!("CARGO_PKG_VERSION")))
            .build()?;
        let key = match &config.auth {
            GithubAuth::App { private_key, .. } => Some(
                jsonwebtoken::EncodingKey::from_rsa_pem(private_key.expose())
                    .map_err(|e| anyhow::anyhow!("github.private_key_file: {e}"))?,
            ),
            _ => None,
        };
        Ok(Client {
            http,
            api: config.api_url.clone(),
            auth: config.auth.clone(),
            key,
            installation_ids: Mutex::default(),
            tokens: Mutex::default(),
        })
    }

    /// `GET {api}{path}` for `repo`, its JSON answer.
    pub(crate) async fn get(&self, repo: &Repo, path: &str) -> Result<Value, Failure> {
        let token = self.token(repo).await?;
        self.call(Method::GET, path, None, &token).await
    }

    /// `POST {api}{path}` with `body` for `repo`, its JSON answer.
    pub(crate) async fn post(
        &self,
        repo: &Repo,
        path: &str,
        body: &Value,
    ) -> Result<Value, Failure> {
        let token = self.token(repo).await?;
        self.call(Method::POST, path, Some(body), &token).await
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        bearer: &str,
    ) -> Result<Value, Failure> {
        let mut request = self
            .http
            .request(method.clone(), format!("{}{path}", self.api))
            .headers(headers(bearer)?);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(|e| {
            Failure::retry(format!(
                "GitHub could not be reached: {:#}",
                e.without_url()
            ))
        })?;
        let status = response.status();
        let limit = rate_limit(response.headers(), status);
        let text = response.text().await.unwrap_or_default();
        if status.is_success() {
            return Ok(serde_json::from_str(&text).unwrap_or(Value::Null));
        }
        let said = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| v["message"].as_str().map(str::to_string))
            .unwrap_or_else(|| text.chars().take(200).collect());
        let error = format!("GitHub answered {status} to {method} {path}: {said}");
        Err(match status.as_u16() {
            _ if limit.is_some() => Failure::Retry {
                error: format!("{error} (rate limited)"),
                after: limit,
            },
            401 => {
                // A revoked installation token: buy another next time.
                self.tokens.lock().await.clear();
                Failure::retry(format!(
                    "{error} (the [github] token or App credentials were refused; fix them, a token_file is read again at each call)"
                ))
            }
            403 => Failure::Final(format!(
                "{error} (the token may not write deployments or statuses of this repository: it needs `deployments` and `statuses` write)"
            )),
            408 | 429 | 500..=599 => Failure::retry(error),
            _ => Failure::Final(error),
        })
    }

    /// The bearer token for calls about `repo`; also what a fetch of `repo` sends as its
    /// password when the app has `[apps.github] fetch_token` (an installation token may read
    /// the App's repositories).
    pub(crate) async fn token(&self, repo: &Repo) -> Result<String, Failure> {
        match &self.auth {
            GithubAuth::Token(secret) => Ok(String::from_utf8_lossy(secret.expose()).into_owned()),
            GithubAuth::TokenFile(path) => {
                let text = tokio::fs::read_to_string(path).await.map_err(|e| {
                    Failure::retry(format!("github.token_file {}: {e}", path.display()))
                })?;
                let token = text.trim();
                if token.is_empty() {
                    return Err(Failure::retry(format!(
                        "github.token_file {}: empty",
                        path.display()
                    )));
                }
                Ok(token.to_string())
            }
            GithubAuth::App {
                installation_id, ..
            } => {
                let id = match installation_id {
                    Some(id) => *id,
                    None => self.installation_id(repo).await?,
                };
                self.installation_token(id).await
            }
        }
    }

    /// The App's installation on `repo` (`GET /repos/{owner}/{repo}/installation`), once.
    async fn installation_id(&self, repo: &Repo) -> Result<u64, Failure> {
        if let Some(id) = self.installation_ids.lock().await.get(repo) {
            return Ok(*id);
        }
        let path = format!("/repos/{}/{}/installation", repo.owner, repo.name);
        let answer = self.call(Method::GET, &path, None, &self.jwt()?).await?;
        let id = answer["id"].as_u64().ok_or_else(|| {
            Failure::Final(format!(
                "GitHub's answer to GET {path} has no installation id"
            ))
        })?;
        self.installation_ids.lock().await.insert(repo.clone(), id);
        Ok(id)
    }

    /// A token of installation `id` with more than [`REFRESH_BEFORE`] left, bought if need be.
    async fn installation_token(&self, id: u64) -> Result<String, Failure> {
        let mut tokens = self.tokens.lock().await;
        let fresh_until = OffsetDateTime::now_utc() + REFRESH_BEFORE;
        if let Some(t) = tokens.get(&id).filter(|t| t.expires > fresh_until) {
            return Ok(t.token.clone());
        }
        let path = format!("/app/installations/{id}/access_tokens");
        let answer = self
            .call(
                Method::POST,
                &path,
                Some(&serde_json::json!({})),
                &self.jwt()?,
            )
            .await?;
        let token = answer["token"].as_str().map(str::to_string);
        let expires = answer["expires_at"].as_str().and_then(|e| {
            OffsetDateTime::parse(e, &time::format_description::well_known::Rfc3339).ok()
        });
        let (Some(token), Some(expires)) = (token, expires) else {
            return Err(Failure::retry(format!(
                "GitHub's answer to POST {path} has no token or expires_at"
            )));
        };
        tokens.insert(
            id,
            Installation {
                token: token.clone(),
                expires,
            },
        );
        Ok(token)
    }

    /// The App's JWT: issued a minute ago (clock drift), valid for 9 minutes (GitHub takes 10
    /// at most).
    fn jwt(&self) -> Result<String, Failure> {
        let (GithubAuth::App { app_id, .. }, Some(key)) = (&self.auth, &self.key) else {
            return Err(Failure::Final("not a GitHub App".into()));
        };
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let claims =
            serde_json::json!({ "iat": now - 60, "exp": now + 540, "iss": app_id.to_string() });
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256),
            &claims,
            key,
        )
        .map_err(|e| Failure::Final(format!("signing the GitHub App's JWT: {e}")))
    }
}

fn headers(bearer: &str) -> Result<HeaderMap, Failure> {
    let mut headers = HeaderMap::new();
    headers.insert(
        ACCEPT,
        HeaderValue::from_static("application/vnd.github+json"),
    );
    headers.insert(
        "x-github-api-version",
        HeaderValue::from_static(API_VERSION),
    );
    let mut auth = HeaderValue::from_str(&format!("Bearer {bearer}"))
        .map_err(|_| Failure::Final("the GitHub token holds characters a header cannot".into()))?;
    auth.set_sensitive(true);
    headers.insert(AUTHORIZATION, auth);
    Ok(headers)
}

/// When a rate-limited answer (GitHub's 403 or 429 with `x-ratelimit-remaining: 0`, or with
/// `Retry-After`) may be tried again; `None` when it is not rate limited.
fn rate_limit(headers: &HeaderMap, status: StatusCode) -> Option<Duration> {
    if !matches!(status.as_u16(), 403 | 429) {
        return None;
    }
    let header = |name| headers.get(name)?.to_str().ok()?.trim().parse::<u64>().ok();
    if let Some(secs) = header(RETRY_AFTER.as_str()) {
        return Some(Duration::from_secs(secs).min(MAX_WAIT));
    }
    if header("x-ratelimit-remaining") == Some(0) {
        let reset = header("x-ratelimit-reset")?;
        let now = u64::try_from(OffsetDateTime::now_utc().unix_timestamp()).unwrap_or(0);
        return Some(Duration::from_secs(reset.saturating_sub(now).max(1)).min(MAX_WAIT));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| {
                (
                    reqwest::header::HeaderName::from_static(k),
                    v.parse().unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn a_rate_limit_is_waited_out_until_it_resets_and_a_plain_403_is_not_one() {
        let forbidden = StatusCode::FORBIDDEN;
        let reset = (OffsetDateTime::now_utc().unix_timestamp() + 30).to_string();
        let limited = headers(&[
            ("x-ratelimit-remaining", "0"),
            ("x-ratelimit-reset", &reset),
        ]);
        let wait = rate_limit(&limited, forbidden).unwrap();
        assert!((28..=30).contains(&wait.as_secs()), "{wait:?}");
        let secondary = headers(&[("retry-after", "60")]);
        assert_eq!(
            rate_limit(&secondary, StatusCode::TOO_MANY_REQUESTS),
            Some(Duration::from_secs(60))
        );
        let left = headers(&[("x-ratelimit-remaining", "12")]);
        assert_eq!(rate_limit(&left, forbidden), None);
        assert_eq!(rate_limit(&limited, StatusCode::NOT_FOUND), None);
    }
}
