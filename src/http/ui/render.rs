//! The pieces every page shares: the layout, badges, times, short commit ids.

use axum::http::StatusCode;
use maud::{html, Markup, DOCTYPE};

use super::session::Viewer;

/// A whole page: head, the top bar (who is signed in, sign-out), and `body`.
pub(super) fn page(title: &str, viewer: Option<&Viewer>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · dockhand" }
                link rel="stylesheet" href="/ui/assets/dockhand.css";
                link rel="icon" href="/ui/assets/favicon.svg" type="image/svg+xml";
            }
            body {
                header.top {
                    a.brand href="/ui" { "dockhand" }
                    @if let Some(viewer) = viewer {
                        @if let Some(token) = &viewer.token {
                            span.who {
                                "signed in as " strong { (token.name) }
                                @if token.read_only { " " span.badge.muted { "read-only" } }
                            }
                            form.inline method="post" action="/ui/sign-out" {
                                (csrf_field(viewer))
                                button.link type="submit" { "Sign out" }
                            }
                        } @else {
                            span.who { "no [[tokens]] configured: read-only" }
                        }
                    }
                }
                main { (body) }
            }
        }
    }
}

/// The hidden CSRF field of a form.
pub(super) fn csrf_field(viewer: &Viewer) -> Markup {
    html! {
        @if let Some(csrf) = &viewer.csrf {
            input type="hidden" name="csrf" value=(csrf);
        }
    }
}

/// The sign-in page, with an error after a refused attempt.
pub(super) fn sign_in(next: &str, error: Option<&str>, no_tokens: bool) -> Markup {
    page(
        "Sign in",
        None,
        html! {
            section.narrow {
                h1 { "Sign in" }
                @if no_tokens {
                    p.notice { "This server has no [[tokens]]: the dashboard is open read-only. "
                        a href="/ui" { "Go to the apps" } "." }
                } @else {
                    p { "Paste an API token from this server's " code { "[[tokens]]" }
                        ". It is exchanged for a session cookie and never kept in the page or the URL." }
                    @if let Some(error) = error { p.error role="alert" { (error) } }
                    form method="post" action="/ui/sign-in" {
                        input type="hidden" name="next" value=(next);
                        label for="token" { "API token" }
                        input #token type="password" name="token" autocomplete="current-password" required autofocus;
                        button type="submit" { "Sign in" }
                    }
                }
            }
        },
    )
}

/// A refusal or failure, as a page.
pub(super) fn error_page(status: StatusCode, message: &str) -> Markup {
    page(
        status.canonical_reason().unwrap_or("Error"),
        None,
        html! {
            section.narrow {
                h1 { (status.as_u16()) " " (status.canonical_reason().unwrap_or("")) }
                p.error role="alert" { (message) }
                p { a href="/ui" { "Back to the apps" } }
            }
        },
    )
}

/// A deploy's status as a coloured badge.
pub(super) fn status(status: &str) -> Markup {
    let class = match status {
        "succeeded" => "ok",
        "failed" | "interrupted" => "bad",
        "running" | "queued" => "busy",
        _ => "muted",
    };
    html! { span class={ "badge " (class) } data-status=(status) { (status) } }
}

/// The first 10 characters of a commit id.
pub(super) fn short(commit: &str) -> &str {
    commit.get(..10).unwrap_or(commit)
}

/// An RFC 3339 time as `2026-12-07 14:03:11Z`, in a `<time>` element.
pub(super) fn time(rfc3339: &str) -> Markup {
    let shown = rfc3339.replacen('T', " ", 1);
    let shown = match shown.split_once('.') {
        Some((whole, _)) => format!("{whole}Z"),
        None => shown,
    };
    html! { time datetime=(rfc3339) { (shown) } }
}

/// A duration in milliseconds, as people read it.
pub(super) fn duration(ms: Option<i64>) -> String {
    match ms {
        None => "–".to_string(),
        Some(ms) if ms < 1000 => format!("{ms} ms"),
        Some(ms) if ms < 60_000 => format!("{:.1} s", ms as f64 / 1000.0),
        Some(ms) => format!("{}m{:02}s", ms / 60_000, (ms % 60_000) / 1000),
    }
}

/// The deploy page's script tag (the only script: it follows the deploy's events).
pub(super) fn deploy_script() -> Markup {
    html! { script src="/ui/assets/deploy.js" defer {} }
}
