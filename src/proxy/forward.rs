//! Forwarding one request: the upstream request (hop-by-hop headers stripped, `X-Forwarded-*`
//! set, always HTTP/1.1 to the upstream), streaming bodies both ways, `Upgrade` connections
//! tunnelled, and the proxy's own answers (503 maintenance / nothing live, 502, 504).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Either, Empty, Full};
use hyper::body::{Body as _, Incoming};
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::http::uri::{Authority, PathAndQuery, Scheme};
use hyper::upgrade::OnUpgrade;
use hyper::{Request, Response, StatusCode, Uri, Version};
use hyper_util::rt::TokioIo;
use tracing::debug;

use super::{Lease, Pass, Proxy};

use crate::metrics::UpstreamKind;

use crate::listener::BoxError;

pub(super) type ProxyBody = UnsyncBoxBody<Bytes, BoxError>;

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Headers that describe one connection, never forwarded (RFC 9110 7.6.1).
const HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// The `X-Forwarded-For` value for a client connection from `peer`.
pub(super) fn forwarded_for(peer: SocketAddr) -> HeaderValue {
    let ip = peer.ip().to_canonical().to_string();
    HeaderValue::from_str(&ip).expect("an IP address is a valid header value")
}

/// What the upstream gets as a request body: the client's, streamed, or nothing (a request
/// without a body, which can be sent again).
pub(super) type UpstreamBody = Either<Incoming, Empty<Bytes>>;

/// Times a body-less idempotent request is sent again after its connection failed before a
/// response head (a kept-alive connection the app had closed, or an app server reloading).
const RETRIES: u32 = 3;
/// The pause before sending again after a refused connection (the app's socket is not back).
const RETRY_CONNECT_PAUSE: std::time::Duration = std::time::Duration::from_millis(100);

/// Forward `req` from the client `forwarded_for` names to the app's live upstream, or answer it
/// ourselves; either way the answer is counted, with the time to its head.
pub(super) async fn handle(
    proxy: Arc<Proxy>,
    forwarded_for: HeaderValue,
    req: Request<Incoming>,
) -> Result<Response<ProxyBody>, Infallible> {
    let started = tokio::time::Instant::now();
    let (resp, by) = answer(&proxy, forwarded_for, req).await;
    proxy
        .metrics
        .answered(resp.status().as_u16(), by, started.elapsed());
    Ok(resp)
}

/// [`handle`]'s answer, and who gave it.
async fn answer(
    proxy: &Arc<Proxy>,
    forwarded_for: HeaderValue,
    mut req: Request<Incoming>,
) -> (Response<ProxyBody>, UpstreamKind) {
    if proxy.maintenance.load(Ordering::Acquire) {
        return (maintenance(&proxy.maintenance_page), UpstreamKind::None);
    }
    let pass = proxy.wait_while_held().await;
    if pass == Pass::Full {
        return (hold_full(proxy), UpstreamKind::None);
    }
    let upgrade = upgrade_protocol(&req);
    let client_upgrade = upgrade.is_some().then(|| hyper::upgrade::on(&mut req));
    let outgoing = Outgoing::new(req, forwarded_for, upgrade);
    let (resp, lease) = match send(proxy, outgoing, pass).await {
        Ok(answered) => answered,
        Err(page) => return page,
    };
    let by = lease.upstream().kind();
    (respond(proxy, resp, lease, client_upgrade), by)
}

/// The request to forward, kept so that it can be sent again when that is safe.
struct Outgoing {
    /// The head of a replayable request (no body, an idempotent method), to send it again.
    replay: Option<hyper::http::request::Parts>,
    /// The request for its first try.
    first: Option<Request<UpstreamBody>>,
    forwarded_for: HeaderValue,
    upgrade: Option<HeaderValue>,
}

impl Outgoing {
    fn new(
        req: Request<Incoming>,
        forwarded_for: HeaderValue,
        upgrade: Option<HeaderValue>,
    ) -> Outgoing {
        // A request without a body whose method may be repeated (RFC 9110 9.2.2) can be sent
        // again when its connection fails before any answer (RFC 9112 9.3.1), as nginx's
        // `proxy_next_upstream error` does; others get one try.
        let replayable =
            upgrade.is_none() && req.method().is_idempotent() && req.body().is_end_stream();
        let (replay, first) = if replayable {
            let (parts, _) = req.into_parts();
            let first = Request::from_parts(parts.clone(), Either::Right(Empty::new()));
            (Some(parts), Some(first))
        } else {
            (None, Some(req.map(Either::Left)))
        };
        Outgoing {
            replay,
            first,
            forwarded_for,
            upgrade,
        }
    }

    /// The next try of the request, as the upstream at `authority` gets it.
    fn next(&mut self, authority: &Authority) -> Request<UpstreamBody> {
        let this = match (self.first.take(), &self.replay) {
            (Some(r), _) => r,
            (None, Some(parts)) => Request::from_parts(parts.clone(), Either::Right(Empty::new())),
            (None, None) => unreachable!("only a replayable request is sent twice"),
        };
        upstream_request(
            this,
            authority,
            self.forwarded_for.clone(),
            self.upgrade.clone(),
        )
    }
}

/// Send the request to the live upstream until it answers: a replayable one again (up to
/// [`RETRIES`] times) when it failed before any answer. `Err` is the page the client gets
/// instead (no upstream, hold full, 502, 504), and who it is counted as answered by.
async fn send(
    proxy: &Arc<Proxy>,
    mut outgoing: Outgoing,
    mut pass: Pass,
) -> Result<(Response<Incoming>, Lease), (Response<ProxyBody>, UpstreamKind)> {
    let timeout = proxy.config.timeout;
    let mut tries = 0;
    loop {
        tries += 1;
        let Some(lease) = proxy.lease_waiting().await else {
            let page = page(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!("{} has no healthy upstream right now.", proxy.app),
            );
            return Err((page, UpstreamKind::None));
        };
        let by = lease.upstream().kind();
        let this = outgoing.next(&lease.upstream().authority);
        let sent = send_once(proxy, &lease, this, tries, pass).await;
        if matches!(&sent, Ok(Err(e)) if e.connect) {
            proxy.metrics.connect_error();
            // A pool member that refuses connections is skipped for a while (a task that
            // Swarm is stopping); the retry goes to the next one.
            lease.upstream().eject();
        }
        match sent {
            Ok(Ok(resp)) => {
                lease.upstream().count(resp.status());
                return Ok((resp, lease));
            }
            Ok(Err(e)) if outgoing.replay.is_some() && tries <= RETRIES => {
                debug!(
                    app = proxy.app,
                    tries,
                    error = e.why,
                    "upstream failed before answering; sending again"
                );
                drop(lease);
                if e.connect {
                    tokio::time::sleep(RETRY_CONNECT_PAUSE).await;
                }
                // A hold that began meanwhile (a reload) is waited out before the next try.
                pass = match proxy.wait_while_held().await {
                    Pass::Full => return Err((hold_full(proxy), UpstreamKind::None)),
                    Pass::Open => pass,
                    Pass::Held => Pass::Held,
                };
            }
            Ok(Err(e)) => {
                debug!(app = proxy.app, error = e.why, "upstream request failed");
                lease.upstream().count(StatusCode::BAD_GATEWAY);
                let page = page(
                    StatusCode::BAD_GATEWAY,
                    &format!("{} did not answer.", proxy.app),
                );
                return Err((page, by));
            }
            Err(_) => {
                lease.upstream().count(StatusCode::GATEWAY_TIMEOUT);
                let page = page(
                    StatusCode::GATEWAY_TIMEOUT,
                    &format!("{} did not answer within {timeout:?}.", proxy.app),
                );
                return Err((page, by));
            }
        }
    }
}

/// One try of `req` over `lease`'s upstream, bounded by the proxy's timeout: the first over
/// the pool, a retry over a fresh connection (the pool may hold more the app has closed). A
/// held request waits for its turn, until its answer's head.
async fn send_once(
    proxy: &Proxy,
    lease: &Lease,
    req: Request<UpstreamBody>,
    tries: u32,
    pass: Pass,
) -> Result<Result<Response<Incoming>, Failed>, tokio::time::error::Elapsed> {
    let turn = match pass {
        Pass::Held => Some(proxy.released_turn().await),
        Pass::Open | Pass::Full => None,
    };
    let sent = async {
        match tries {
            1 => lease
                .upstream()
                .client
                .request(req)
                .await
                .map_err(|e| Failed {
                    connect: e.is_connect(),
                    why: error_chain(&e),
                }),
            _ => send_fresh(lease.upstream().target.addr, req).await,
        }
    };
    let answered = tokio::time::timeout(proxy.config.timeout, sent).await;
    drop(turn);
    answered
}

/// The upstream's answer as the client gets it: a 101 tunnels both connections (holding the
/// lease), anything else has its hop-by-hop headers stripped and its body streamed back, the
/// lease held until the body ends.
fn respond(
    proxy: &Proxy,
    mut resp: Response<Incoming>,
    lease: Lease,
    client_upgrade: Option<OnUpgrade>,
) -> Response<ProxyBody> {
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        let Some(client_upgrade) = client_upgrade else {
            return page(
                StatusCode::BAD_GATEWAY,
                &format!("{} switched protocols unasked.", proxy.app),
            );
        };
        let upstream_upgrade = hyper::upgrade::on(&mut resp);
        tokio::spawn(tunnel(client_upgrade, upstream_upgrade, lease));
        // The 101 keeps its Connection/Upgrade headers: they are the point of it.
        let (parts, _) = resp.into_parts();
        return Response::from_parts(parts, empty());
    }
    strip_hop_by_hop(resp.headers_mut());
    let (parts, body) = resp.into_parts();
    // The lease lives as long as the response body: a drain waits for streams to finish.
    let body = body
        .map_frame(move |frame| {
            let _held = &lease;
            frame
        })
        .map_err(BoxError::from)
        .boxed_unsync();
    Response::from_parts(parts, body)
}

/// A request that got no answer: whether the connection was never made, and why.
struct Failed {
    connect: bool,
    why: String,
}

/// Send `req` over a new connection of its own to `addr` (origin-form, HTTP/1.1), not the pool.
async fn send_fresh(
    addr: std::net::SocketAddr,
    mut req: Request<UpstreamBody>,
) -> Result<Response<Incoming>, Failed> {
    let connect = |why: String| Failed { connect: true, why };
    let stream = tokio::time::timeout(super::CONNECT_TIMEOUT, tokio::net::TcpStream::connect(addr))
        .await
        .map_err(|_| connect(format!("connecting to {addr} timed out")))?
        .map_err(|e| connect(format!("connecting to {addr}: {e}")))?;
    let _ = stream.set_nodelay(true);
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| connect(error_chain(&e)))?;
    // Ends when the response is read and the sender dropped.
    tokio::spawn(connection);
    let path = req
        .uri()
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    *req.uri_mut() = Uri::from(path);
    sender.send_request(req).await.map_err(|e| Failed {
        connect: false,
        why: error_chain(&e),
    })
}

/// 503: a hold is on and `hold_max` requests wait already.
fn hold_full(proxy: &Proxy) -> Response<ProxyBody> {
    page(
        StatusCode::SERVICE_UNAVAILABLE,
        &format!(
            "{} is reloading and too many requests are waiting.",
            proxy.app
        ),
    )
}

/// The protocol an HTTP/1.1 request asks to upgrade to (`Connection: upgrade` + `Upgrade`).
/// `h2c` is dropped: the client gets HTTP/1.1 answers (it may speak h2c to us directly).
fn upgrade_protocol(req: &Request<Incoming>) -> Option<HeaderValue> {
    if req.version() != Version::HTTP_11 || !connection_has(req.headers(), "upgrade") {
        return None;
    }
    let proto = req.headers().get(header::UPGRADE)?;
    let is_h2c = proto
        .to_str()
        .is_ok_and(|p| p.trim().eq_ignore_ascii_case("h2c"));
    (!is_h2c).then(|| proto.clone())
}

fn connection_has(headers: &HeaderMap, token: &str) -> bool {
    connection_tokens(headers).any(|t| t.eq_ignore_ascii_case(token))
}

/// The tokens of every `Connection` header field.
fn connection_tokens(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
}

/// The request as the upstream gets it: origin-form URI to `addr`, HTTP/1.1, hop-by-hop
/// headers removed, `Host` kept, `X-Forwarded-For/-Proto/-Host` set by us (never trusted from
/// the client), and the upgrade headers again when the client asked for one.
fn upstream_request<B>(
    req: Request<B>,
    authority: &Authority,
    forwarded_for: HeaderValue,
    upgrade: Option<HeaderValue>,
) -> Request<B> {
    let (mut parts, body) = req.into_parts();
    let host = parts.headers.get(header::HOST).cloned().or_else(|| {
        let authority = parts.uri.authority()?;
        HeaderValue::from_str(authority.as_str()).ok()
    });
    let path = parts
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    parts.uri = Uri::builder()
        .scheme(Scheme::HTTP)
        .authority(authority.clone())
        .path_and_query(path)
        .build()
        .expect("an authority and a parsed path make a valid URI");
    if parts.version == Version::HTTP_2 {
        join_cookies(&mut parts.headers);
    }
    parts.version = Version::HTTP_11;
    let headers = &mut parts.headers;
    strip_hop_by_hop(headers);
    if let Some(host) = host {
        headers.insert(header::HOST, host.clone());
        headers.insert(X_FORWARDED_HOST, host);
    }
    headers.insert(X_FORWARDED_FOR, forwarded_for);
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
    if let Some(proto) = upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, proto);
    }
    Request::from_parts(parts, body)
}

/// Remove hop-by-hop headers, including any the `Connection` header names.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = connection_tokens(headers)
        .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
        .collect();
    for name in HOP_BY_HOP.iter().chain(&named) {
        headers.remove(name);
    }
}

/// HTTP/2 may split `Cookie` into several fields; HTTP/1.1 wants one (RFC 9113 8.2.3).
fn join_cookies(headers: &mut HeaderMap) {
    let cookies: Vec<&str> = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    if cookies.len() > 1 {
        if let Ok(joined) = HeaderValue::from_str(&cookies.join("; ")) {
            headers.insert(header::COOKIE, joined);
        }
    }
}

/// Copy bytes both ways between the client's and the upstream's upgraded connections; the
/// lease is held until both sides are closed.
async fn tunnel(client: OnUpgrade, upstream: OnUpgrade, _lease: Lease) {
    let (client, upstream) = match tokio::try_join!(client, upstream) {
        Ok(both) => both,
        Err(e) => {
            debug!(error = %e, "upgrade failed");
            return;
        }
    };
    let (mut client, mut upstream) = (TokioIo::new(client), TokioIo::new(upstream));
    if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
        debug!(error = %e, "upgraded connection ended with an error");
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

fn empty() -> ProxyBody {
    full(Bytes::new())
}

fn full(bytes: Bytes) -> ProxyBody {
    Full::new(bytes)
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// The proxy's own answer: a small HTML page naming the status and what happened.
fn page(status: StatusCode, message: &str) -> Response<ProxyBody> {
    let code = status.as_u16();
    let reason = status.canonical_reason().unwrap_or("");
    let body = format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>{code} {reason}</title></head>\n\
         <body><h1>{code} {reason}</h1><p>{message}</p><hr><p>dockhand proxy</p></body></html>\n"
    );
    let mut resp = Response::new(full(Bytes::from(body)));
    *resp.status_mut() = status;
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if status == StatusCode::SERVICE_UNAVAILABLE {
        headers.insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    }
    resp
}

/// The maintenance answer's body and content type (HTML when it looks like HTML), made once.
pub(super) fn maintenance_page(body: &str) -> (Bytes, HeaderValue) {
    let html = body.trim_start().starts_with('<');
    let content_type = HeaderValue::from_static(if html {
        "text/html; charset=utf-8"
    } else {
        "text/plain; charset=utf-8"
    });
    (Bytes::from(body.to_string()), content_type)
}

/// 503 with the operator's maintenance page.
fn maintenance((body, content_type): &(Bytes, HeaderValue)) -> Response<ProxyBody> {
    let mut resp = Response::new(full(body.clone()));
    *resp.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    let headers = resp.headers_mut();
    headers.insert(header::CONTENT_TYPE, content_type.clone());
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::RETRY_AFTER, HeaderValue::from_static("30"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn hop_by_hop_headers_and_those_connection_names_are_removed() {
        let mut h = headers(&[
            ("connection", "keep-alive, X-Secret-Hop"),
            ("keep-alive", "timeout=5"),
            ("x-secret-hop", "1"),
            ("transfer-encoding", "chunked"),
            ("te", "trailers"),
            ("upgrade", "websocket"),
            ("proxy-authorization", "Basic eA=="),
            ("x-end-to-end", "kept"),
            ("content-type", "text/plain"),
        ]);
        strip_hop_by_hop(&mut h);
        let mut left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        left.sort_unstable();
        assert_eq!(left, ["content-type", "x-end-to-end"]);
    }

    #[test]
    fn split_http2_cookies_become_one_header() {
        let mut h = headers(&[("cookie", "a=1"), ("cookie", "b=2")]);
        join_cookies(&mut h);
        assert_eq!(h.get_all(header::COOKIE).iter().count(), 1);
        assert_eq!(h[header::COOKIE], "a=1; b=2");
    }

    #[test]
    fn connection_tokens_are_matched_case_insensitively_across_fields() {
        let h = headers(&[("connection", "keep-alive"), ("connection", " Upgrade ")]);
        assert!(connection_has(&h, "upgrade"));
        assert!(!connection_has(&h, "close"));
    }
}
