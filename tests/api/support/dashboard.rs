//! The dashboard tests' dockhand: the operations tests' two apps and tokens (`admin`, `scoped`)
//! plus `viewer`, a read-only token for every app.

use crate::support::helpers::*;
use crate::support::ops::*;

pub const VIEWER: &str = "viewer-token-0123456789abcdef";

/// [`spawn_ops_edited`] with the `viewer` token added; `server_extra` goes in `[server]`.
/// Tokens are read once at startup, so the viewer's file is removed once dockhand runs (a
/// restart of this dockhand would not find it).
pub async fn spawn_dashboard(origin: &Origin, server_extra: &str) -> Ops {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), VIEWER).unwrap();
    let (_, path) = file.keep().unwrap();
    let viewer = format!(
        "\n[[tokens]]\nname = \"viewer\"\ntoken_file = \"{}\"\napps = [\"*\"]\nread_only = true\n",
        path.display()
    );
    let ops = spawn_ops_edited(origin, server_extra, "", |t| format!("{t}{viewer}")).await;
    std::fs::remove_file(&path).unwrap();
    ops
}

/// A browser's view of the dashboard: one session cookie, no redirects followed, and forms
/// sent with this server's `Origin`, as a page of it sends them.
pub struct Browser {
    pub base: String,
    pub client: reqwest::Client,
    /// `dockhand_session=…`, once signed in.
    pub cookie: Option<String>,
}

impl Browser {
    pub fn new(ops: &Ops) -> Browser {
        Browser {
            base: ops.app.url(""),
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .pool_idle_timeout(std::time::Duration::from_secs(5))
                .build()
                .unwrap(),
            cookie: None,
        }
    }

    /// Sign in with `token`; panics unless it worked. Returns the `Set-Cookie` header.
    pub async fn sign_in(&mut self, token: &str) -> String {
        let response = self.form("/ui/sign-in", &[("token", token)]).await;
        assert_eq!(response.status(), 303, "{:?}", response.text().await);
        let set = response.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .to_string();
        self.cookie = Some(set.split(';').next().unwrap().to_string());
        set
    }

    fn with_cookie(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.cookie {
            Some(c) => request.header("cookie", c),
            None => request,
        }
    }

    /// GET `path` with the session: status, `Location` (if any) and body.
    pub async fn page(&self, path: &str) -> (u16, Option<String>, String) {
        let request = self.with_cookie(self.client.get(format!("{}{path}", self.base)));
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let location = response
            .headers()
            .get("location")
            .map(|l| l.to_str().unwrap().to_string());
        (status, location, response.text().await.unwrap())
    }

    /// POST a form from a page of this server (its `Origin`), with the session.
    pub async fn form(&self, path: &str, fields: &[(&str, &str)]) -> reqwest::Response {
        self.form_from(path, fields, &self.base).await
    }

    /// POST a form as a page of `origin` would.
    pub async fn form_from(
        &self,
        path: &str,
        fields: &[(&str, &str)],
        origin: &str,
    ) -> reqwest::Response {
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(fields)
            .finish();
        let request = self
            .client
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("origin", origin.trim_end_matches('/'))
            .body(body);
        self.with_cookie(request).send().await.unwrap()
    }

    /// The CSRF token in a page's forms.
    pub fn csrf(page: &str) -> String {
        let at = page
            .find("name=\"csrf\" value=\"")
            .unwrap_or_else(|| panic!("no CSRF field in {page}"));
        let rest = &page[at + "name=\"csrf\" value=\"".len()..];
        rest[..rest.find('"').unwrap()].to_string()
    }
}
