//! Keeping secrets out of what is shown or logged: a [`Secret`] whose `Debug` is redacted, and
//! [`redact_url`], which strips credentials from a URL.
//!
//! A leaf: it imports nothing of the crate, so every module (config, git, the deploy runner, the
//! CLI client) can use it without depending on any other.

use std::fmt;

/// A secret value (a webhook secret, a token, a password). Never printed: `Debug` is redacted and
/// there is no `Display`.
#[derive(Clone)]
pub struct Secret(Vec<u8>);

impl Secret {
    /// Wrap a value read from the config, an environment variable or a file.
    pub fn new(value: Vec<u8>) -> Secret {
        Secret(value)
    }

    /// The value, for the one place that needs it (an HMAC key, a header).
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// The value, for a caller that keeps it in another redacted form (registry credentials).
    pub fn into_bytes(self) -> Vec<u8> {
        self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// `https://user:token@host/x` → `https://host/x`, for anything that is shown or logged. The
/// authority ends at the first `/`, `?` or `#`; scp-like and plain paths are left as they are.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{}{}", &url[..scheme_end + 3], &rest[at + 1..]),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_in_urls_are_redacted() {
        assert_eq!(
            redact_url("https://u:tok@github.com/a/b"),
            "https://github.com/a/b"
        );
        assert_eq!(redact_url("/srv/origin.git"), "/srv/origin.git");
    }

    #[test]
    fn a_secret_never_shows_in_debug() {
        let secret = Secret::new(b"s3cret".to_vec());
        assert_eq!(format!("{secret:?}"), "Secret(<redacted>)");
        assert_eq!(secret.expose(), b"s3cret");
    }
}
