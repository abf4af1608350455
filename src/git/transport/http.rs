//! Smart HTTP(S) for libgit2 on reqwest: `GET …/info/refs?service=git-upload-pack`, then one
//! `POST …/git-upload-pack` per negotiation round, each body buffered from libgit2's writes and
//! sent in one request on a pooled, `TCP_NODELAY` connection.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::sync::{Arc, Mutex, OnceLock};

use git2::transport::{Service, SmartSubtransport, SmartSubtransportStream};
use reqwest::blocking::{Client, Response};
use reqwest::header::{ACCEPT, CONTENT_TYPE, USER_AGENT};
use reqwest::StatusCode;
use sha2::{Digest, Sha256};

use super::Reach;
use crate::git::Credentials;
use crate::redact::redact_url;

/// Smart-protocol servers check for a `git/` agent (GitHub serves some features only to it).
const AGENT: &str = concat!("git/2.0 (dockhand/", env!("CARGO_PKG_VERSION"), ")");

pub(super) struct Http {
    reach: Reach,
    client: Client,
    /// User and password, and where they came from (for the error when they are refused).
    auth: Option<(String, String, String)>,
    /// The repository URL after the first request's redirects, for the requests that follow.
    base: Arc<Mutex<Option<String>>>,
}

impl Http {
    /// The client for this app's roots, and its credentials: the token file is read now, so a
    /// rotated token is used by the next fetch.
    pub fn new(reach: Reach) -> Result<Http, git2::Error> {
        let client = client(&reach).map_err(|e| reach.fail_git(e))?;
        let auth = match &reach.access.credentials {
            Credentials::None | Credentials::SshKey(_) => None,
            Credentials::Token(token) => Some((
                "x-access-token".to_string(),
                token.clone(),
                "the token from token_env".to_string(),
            )),
            Credentials::GithubToken(token) => Some((
                "x-access-token".to_string(),
                token.clone(),
                "[github]'s token for this repository (fetch_token)".to_string(),
            )),
            Credentials::TokenFile(path) => {
                let token = read_token(path).map_err(|e| reach.fail_git(e))?;
                Some((
                    "x-access-token".to_string(),
                    token,
                    format!("the token in {}", path.display()),
                ))
            }
        };
        Ok(Http {
            reach,
            client,
            auth,
            base: Arc::default(),
        })
    }
}

impl SmartSubtransport for Http {
    fn action(
        &self,
        url: &str,
        action: Service,
    ) -> Result<Box<dyn SmartSubtransportStream>, git2::Error> {
        let kind = match action {
            Service::UploadPackLs => Request::Advertise,
            Service::UploadPack => Request::UploadPack,
            Service::ReceivePackLs | Service::ReceivePack => {
                return Err(git2::Error::from_str("dockhand only fetches"))
            }
        };
        let mut url = reqwest::Url::parse(url)
            .map_err(|e| self.reach.fail_git(format!("bad origin URL: {e}")))?;
        // Credentials in the URL win over the app's token, and never reach a log line.
        let mut auth = self.auth.clone();
        if !url.username().is_empty() || url.password().is_some() {
            let user = percent_decode(url.username());
            let password = url.password().map(percent_decode).unwrap_or_default();
            auth = Some((
                user,
                password,
                "the credentials in the repo URL".to_string(),
            ));
            let _ = url.set_username("");
            let _ = url.set_password(None);
        }
        Ok(Box::new(Stream {
            reach: self.reach.clone(),
            client: self.client.clone(),
            auth,
            kind,
            url: url.to_string().trim_end_matches('/').to_string(),
            base: self.base.clone(),
            body: Vec::new(),
            response: None,
        }))
    }

    fn close(&self) -> Result<(), git2::Error> {
        Ok(())
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Request {
    Advertise,
    UploadPack,
}

struct Stream {
    reach: Reach,
    client: Client,
    auth: Option<(String, String, String)>,
    kind: Request,
    url: String,
    base: Arc<Mutex<Option<String>>>,
    body: Vec<u8>,
    response: Option<Response>,
}

impl Stream {
    fn send(&mut self) -> io::Result<Response> {
        let timeout = self.reach.remaining()?;
        let base = self
            .base
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .unwrap_or_else(|| self.url.clone());
        let request = match self.kind {
            Request::Advertise => self
                .client
                .get(format!("{base}/info/refs?service=git-upload-pack")),
            Request::UploadPack => self
                .client
                .post(format!("{base}/git-upload-pack"))
                .header(CONTENT_TYPE, "application/x-git-upload-pack-request")
                .header(ACCEPT, "application/x-git-upload-pack-result")
                .body(std::mem::take(&mut self.body)),
        };
        let mut request = request.header(USER_AGENT, AGENT).timeout(timeout);
        if let Some((user, password, _)) = &self.auth {
            request = request.basic_auth(user, Some(password));
        }
        let shown = redact_url(&base);
        let response = request.send().map_err(|e| {
            if e.is_timeout() {
                self.reach.timeout_error()
            } else {
                self.reach.fail(io::ErrorKind::Other, explain(&e, &shown))
            }
        })?;
        let status = response.status();
        if !status.is_success() {
            let message = match (status, &self.auth) {
                (StatusCode::UNAUTHORIZED, Some((_, _, from))) => format!(
                    "{shown} refused {from} (HTTP 401): check that it is current and may read this repository"
                ),
                (StatusCode::UNAUTHORIZED, None) => format!(
                    "{shown} needs credentials (HTTP 401): set token_file (or token_env) for this app"
                ),
                (StatusCode::FORBIDDEN, _) => format!(
                    "{shown} refused access (HTTP 403): the credentials may not read this repository"
                ),
                (StatusCode::NOT_FOUND, _) => {
                    format!("no git repository at {shown} (HTTP 404)")
                }
                _ => format!("{shown} answered HTTP {status}"),
            };
            return Err(self.reach.fail(io::ErrorKind::Other, message));
        }
        if self.kind == Request::Advertise {
            let expected = "application/x-git-upload-pack-advertisement";
            let got = response
                .headers()
                .get(CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if got != expected {
                return Err(self.reach.fail(
                    io::ErrorKind::InvalidData,
                    format!(
                        "{shown} is not a smart-HTTP git server (it answered {got:?}, not {expected}); \
                         check the repo URL"
                    ),
                ));
            }
            // Later requests go where the redirects led (as git does for info/refs).
            let landed = response.url().as_str();
            if let Some(moved) = landed.split_once("/info/refs?").map(|(b, _)| b.to_string()) {
                if moved != base {
                    *self.base.lock().unwrap_or_else(|e| e.into_inner()) = Some(moved);
                }
            }
        }
        Ok(response)
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.response.is_none() {
            self.response = Some(self.send()?);
        }
        let response = self.response.as_mut().expect("sent above");
        response.read(buf).map_err(|e| {
            if self.reach.remaining().is_err() || e.kind() == io::ErrorKind::TimedOut {
                self.reach.timeout_error()
            } else {
                e
            }
        })
    }
}

impl Write for Stream {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.response.is_some() {
            return Err(io::Error::other("request already sent"));
        }
        self.body.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// One client per set of trusted roots, kept for the process: its pool keeps connections to
/// an origin open between fetches. The CA file is read per fetch (a replaced CA is picked up).
fn client(reach: &Reach) -> Result<Client, String> {
    static CLIENTS: OnceLock<Mutex<HashMap<[u8; 32], Client>>> = OnceLock::new();
    let ca = match &reach.access.ca_file {
        Some(path) => Some(
            std::fs::read(path)
                .map_err(|e| format!("ca_file: cannot read {}: {e}", path.display()))?,
        ),
        None => None,
    };
    let key: [u8; 32] = Sha256::digest(ca.as_deref().unwrap_or_default()).into();
    let mut clients = CLIENTS
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(c) = clients.get(&key) {
        return Ok(c.clone());
    }
    let mut builder = Client::builder()
        .tcp_nodelay(true)
        .connect_timeout(std::time::Duration::from_secs(30));
    if let (Some(pem), Some(path)) = (&ca, &reach.access.ca_file) {
        let certs = reqwest::Certificate::from_pem_bundle(pem)
            .map_err(|e| format!("ca_file {}: not PEM certificates: {e}", path.display()))?;
        if certs.is_empty() {
            return Err(format!(
                "ca_file {}: holds no PEM certificate",
                path.display()
            ));
        }
        for cert in certs {
            builder = builder.add_root_certificate(cert);
        }
    }
    let built = builder
        .build()
        .map_err(|e| format!("setting up the HTTPS client: {e}"))?;
    clients.insert(key, built.clone());
    Ok(built)
}

fn read_token(path: &std::path::Path) -> Result<String, String> {
    let token = std::fs::read_to_string(path)
        .map_err(|e| format!("token_file: cannot read {}: {e}", path.display()))?;
    let token = token.trim();
    if token.is_empty() {
        return Err(format!("token_file {} is empty", path.display()));
    }
    Ok(token.to_string())
}

fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

/// The TLS error inside `err`, also through the I/O errors the connector nests it in (whose
/// `source()` skips the error they wrap).
fn rustls_error<'e>(err: &'e (dyn std::error::Error + 'static)) -> Option<&'e rustls::Error> {
    let mut err = err;
    loop {
        if let Some(tls) = err.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        err = err.downcast_ref::<io::Error>()?.get_ref()?;
    }
}

/// Say what went wrong with a request in words that point at the fix.
fn explain(e: &reqwest::Error, shown: &str) -> String {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if let Some(tls) = rustls_error(err) {
            return match tls {
                rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer) => {
                    format!(
                        "TLS: the certificate of {shown} is signed by a CA this host does not trust; \
                         for a private CA set ca_file (it is added to the system roots)"
                    )
                }
                rustls::Error::InvalidCertificate(
                    rustls::CertificateError::NotValidForName
                    | rustls::CertificateError::NotValidForNameContext { .. },
                ) => format!(
                    "TLS: the certificate of {shown} is not valid for that host name \
                     (host-name mismatch): use the name the certificate was issued for"
                ),
                rustls::Error::InvalidCertificate(
                    rustls::CertificateError::Expired
                    | rustls::CertificateError::ExpiredContext { .. },
                ) => format!("TLS: the certificate of {shown} has expired"),
                other => format!("TLS with {shown} failed: {other}"),
            };
        }
        source = err.source();
    }
    let mut message = format!("cannot reach {shown}");

    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(err) = source {
        message.push_str(": ");
        message.push_str(&err.to_string());
        source = err.source();
    }
    message
}
