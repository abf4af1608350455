//! The built-in reverse proxy with a fixed upstream (an app without a container): a real
//! upstream HTTP server and a real WebSocket server in the test, real clients, and the real
//! dockhand binary for the memory test.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::Message;

use crate::support::helpers::*;
use crate::support::server::Server;

type Body = BoxBody<Bytes, Infallible>;

/// Hand-offs between a test and its upstream, to prove bodies stream (no timing involved).
#[derive(Default)]
struct Gates {
    /// The upstream got the first part of an upload.
    upload_started: Notify,
    /// The client got the first part of a download.
    download_started: Notify,
    /// Connections the upstream accepted.
    connections: std::sync::atomic::AtomicUsize,
}

/// A real HTTP/1.1 upstream on a loopback port:
/// - `/echo` answers what it received (method, path, version, headers) as JSON;
/// - `/upload` counts the body's bytes (signalling `upload_started` after the first frame);
/// - `/download?bytes=N` streams N bytes in 64 KiB chunks;
/// - `/gated` sends one chunk, waits for `download_started`, then sends the last;
/// - `/slow` answers after 2 s.
async fn upstream(gates: Arc<Gates>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            gates
                .connections
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let gates = gates.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| answer(gates.clone(), req));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

async fn answer(gates: Arc<Gates>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let full = |b: String| Full::new(Bytes::from(b)).boxed();
    let body = match req.uri().path() {
        "/echo" => {
            let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for (k, v) in req.headers() {
                headers
                    .entry(k.to_string())
                    .or_default()
                    .push(v.to_str().unwrap_or("?").to_string());
            }
            full(
                json!({
                    "method": req.method().as_str(),
                    "path": req.uri().to_string(),
                    "version": format!("{:?}", req.version()),
                    "headers": headers,
                })
                .to_string(),
            )
        }
        "/upload" => {
            let mut body = req.into_body();
            let mut total = 0usize;
            let mut first = true;
            while let Some(frame) = body.frame().await {
                let Ok(frame) = frame else { break };
                if let Some(data) = frame.data_ref() {
                    total += data.len();
                    if first {
                        first = false;
                        gates.upload_started.notify_one();
                    }
                }
            }
            full(total.to_string())
        }
        "/download" => {
            let wanted: usize = req
                .uri()
                .query()
                .and_then(|q| q.strip_prefix("bytes="))
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
            let chunks = (0..wanted.div_ceil(chunk.len())).map(move |i| {
                let left = wanted - i * chunk.len();
                Ok::<_, Infallible>(Frame::data(chunk.slice(..left.min(chunk.len()))))
            });
            BodyExt::boxed(StreamBody::new(futures_util::stream::iter(chunks)))
        }
        "/gated" => {
            let stream = futures_util::stream::unfold(0, move |step| {
                let gates = gates.clone();
                async move {
                    match step {
                        0 => Some((Ok(Frame::data(Bytes::from("first;"))), 1)),
                        1 => {
                            gates.download_started.notified().await;
                            Some((Ok(Frame::data(Bytes::from("last"))), 2))
                        }
                        _ => None,
                    }
                }
            });
            BodyExt::boxed(StreamBody::new(stream))
        }
        "/slow" => {
            tokio::time::sleep(Duration::from_secs(2)).await;
            full("late".to_string())
        }
        _ => full("upstream root".to_string()),
    };
    Ok(Response::new(body))
}

/// An app with a fixed upstream behind a proxy on a fresh loopback port.
async fn proxied(origin: &Origin, upstream: SocketAddr, extra: &str) -> (TestApp, String) {
    let app = spawn_app_with(
        origin,
        "",
        &format!("[apps.proxy]\nlisten = \"127.0.0.1:0\"\nupstream = \"{upstream}\"\n{extra}"),
    )
    .await;
    let url = app.proxy_url().await;
    (app, url)
}

#[tokio::test]
async fn requests_reach_the_upstream_with_forwarded_headers_and_without_hop_by_hop_ones() {
    let origin = Origin::new();
    let upstream = upstream(Arc::default()).await;
    let (app, base) = proxied(&origin, upstream, "").await;

    let response = client()
        .get(format!("{base}/echo?q=1&r=two"))
        .header("host", "shop.example")
        .header("connection", "keep-alive, x-hop")
        .header("x-hop", "per-connection")
        .header("keep-alive", "timeout=5")
        .header("x-forwarded-for", "203.0.113.9")
        .header("x-end-to-end", "kept")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let seen: Value = response.json().await.unwrap();
    let h = &seen["headers"];
    assert_eq!(seen["path"], "/echo?q=1&r=two");
    assert_eq!(seen["version"], "HTTP/1.1");
    assert_eq!(h["host"], json!(["shop.example"]));
    assert_eq!(h["x-forwarded-host"], json!(["shop.example"]));
    assert_eq!(h["x-forwarded-proto"], json!(["http"]));
    // The client's own X-Forwarded-For is not trusted: the proxy is the edge.
    assert_eq!(h["x-forwarded-for"], json!(["127.0.0.1"]));
    assert_eq!(h["x-end-to-end"], json!(["kept"]));
    for hop in ["x-hop", "keep-alive"] {
        assert!(h.get(hop).is_none(), "{hop} was forwarded: {seen}");
    }

    let status = &app.get("/api/apps/web").await["proxy"];
    assert_eq!(status["upstream"], upstream.to_string());
    assert_eq!(status["maintenance"], false);
}

#[tokio::test]
async fn connections_to_the_upstream_are_kept_alive_across_requests() {
    let origin = Origin::new();
    let gates = Arc::new(Gates::default());
    let upstream = upstream(gates.clone()).await;
    let (_app, base) = proxied(&origin, upstream, "").await;
    for _ in 0..20 {
        // A new client connection each time: only the proxy's pool can reuse anything.
        let response = reqwest::Client::new()
            .get(format!("{base}/echo"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        response.bytes().await.unwrap();
    }
    assert_eq!(
        gates.connections.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "20 sequential requests should share one upstream connection"
    );
}

#[tokio::test]
async fn h2c_clients_get_http2_and_the_upstream_gets_http1() {
    let origin = Origin::new();
    let upstream = upstream(Arc::default()).await;
    let (_app, base) = proxied(&origin, upstream, "").await;
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();

    let response = h2.get(format!("{base}/echo")).send().await.unwrap();
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    let seen: Value = response.json().await.unwrap();
    assert_eq!(seen["version"], "HTTP/1.1");
    assert_eq!(
        seen["headers"]["host"],
        json!([base.trim_start_matches("http://")]),
        "the :authority becomes Host"
    );
    let uploaded = h2
        .post(format!("{base}/upload"))
        .body(vec![7u8; 300_000])
        .send()
        .await
        .unwrap();
    assert_eq!(uploaded.text().await.unwrap(), "300000");
}

#[tokio::test]
async fn bodies_stream_through_the_proxy_in_both_directions() {
    let origin = Origin::new();
    let gates = Arc::new(Gates::default());
    let upstream = upstream(gates.clone()).await;
    let (_app, base) = proxied(&origin, upstream, "").await;
    const HELD: &str = "the proxy held the body back instead of streaming it";

    // Download: the upstream sends its last chunk only after the client got the first.
    let response = client().get(format!("{base}/gated")).send().await.unwrap();
    let mut body = response.bytes_stream();
    let first = tokio::time::timeout(Duration::from_secs(10), body.next())
        .await
        .expect(HELD)
        .unwrap()
        .unwrap();
    assert_eq!(first, "first;");
    gates.download_started.notify_one();
    let rest = body.next().await.unwrap().unwrap();
    assert_eq!(rest, "last");

    // Upload: the client sends its second part only after the upstream got the first.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(1);
    let sending = client()
        .post(format!("{base}/upload"))
        .body(reqwest::Body::wrap_stream(tokio_stream_from(rx)))
        .send();
    let sending = tokio::spawn(sending);
    tx.send(Ok(Bytes::from(vec![1u8; 1000]))).await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), gates.upload_started.notified())
        .await
        .expect(HELD);
    tx.send(Ok(Bytes::from(vec![2u8; 500]))).await.unwrap();
    drop(tx);
    let answer = sending.await.unwrap().unwrap().text().await.unwrap();
    assert_eq!(answer, "1500");
}

/// A receiver as a `Stream` (what `reqwest::Body::wrap_stream` takes).
fn tokio_stream_from<T: Send + 'static>(
    rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures_util::Stream<Item = T> + Send + 'static {
    futures_util::stream::unfold(rx, |mut rx| async move {
        let item = rx.recv().await?;
        Some((item, rx))
    })
}

#[tokio::test]
async fn websocket_connections_are_tunnelled_to_the_upstream() {
    let origin = Origin::new();
    // A real WebSocket server: echoes each text message upper-cased.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ws_addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut ws = tokio_tungstenite::accept_async(stream).await.unwrap();
                while let Some(Ok(msg)) = ws.next().await {
                    if let Message::Text(text) = msg {
                        let reply = text.to_uppercase();
                        ws.send(Message::text(reply)).await.unwrap();
                    }
                }
            });
        }
    });
    let (_app, base) = proxied(&origin, ws_addr, "").await;
    let url = base.replace("http://", "ws://") + "/socket";

    let (mut ws, response) = tokio_tungstenite::connect_async(url).await.unwrap();
    assert_eq!(response.status(), 101);
    for word in ["hello", "through", "dockhand"] {
        ws.send(Message::text(word)).await.unwrap();
        let reply = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("an answer through the tunnel")
            .unwrap()
            .unwrap();
        assert_eq!(reply, Message::text(word.to_uppercase()));
    }
    ws.close(None).await.unwrap();
}

#[tokio::test]
async fn maintenance_mode_answers_503_with_the_configured_body_and_never_reaches_the_upstream() {
    let origin = Origin::new();
    let upstream = upstream(Arc::default()).await;
    let (app, base) = proxied(
        &origin,
        upstream,
        "maintenance = true\nmaintenance_body = \"<h1>Back at 14:00</h1>\"\n",
    )
    .await;

    let response = client().get(format!("{base}/echo")).send().await.unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(
        response.headers()["content-type"],
        "text/html; charset=utf-8"
    );
    assert!(response.headers().contains_key("retry-after"));
    assert_eq!(response.text().await.unwrap(), "<h1>Back at 14:00</h1>");
    assert_eq!(app.get("/api/apps/web").await["proxy"]["maintenance"], true);
}

async fn switch(
    ops: &crate::support::ops::Ops,
    method: reqwest::Method,
    token: Option<&str>,
    app: &str,
) -> reqwest::Response {
    let path = format!("/api/apps/{app}/maintenance");
    ops.call(method, &path, token, Value::Null).await
}

#[tokio::test]
async fn the_maintenance_switch_is_set_over_the_api_with_a_token_and_survives_a_restart() {
    use reqwest::Method;
    let origin = Origin::new();
    let upstream = upstream(Arc::default()).await;
    let proxy_port = free_port();
    let ops = crate::support::ops::spawn_ops(
        &origin,
        &format!(
            "[apps.proxy]\nlisten = \"127.0.0.1:{proxy_port}\"\nupstream = \"{upstream}\"\n\
             maintenance_body = \"Back soon\"\n"
        ),
    )
    .await;
    let url = format!("http://127.0.0.1:{proxy_port}/echo");
    let page = || get_page(&url);
    assert_eq!(page().await.0, 200);

    let refused = switch(&ops, Method::POST, None, "web").await;
    assert_eq!(refused.status(), 401);
    assert_eq!(page().await.0, 200, "nothing changed without a token");
    let no_proxy = switch(
        &ops,
        Method::POST,
        Some(crate::support::ops::ADMIN),
        "other",
    )
    .await;
    assert_eq!(no_proxy.status(), 400);
    assert!(no_proxy.text().await.unwrap().contains("no [apps.proxy]"));

    let on = switch(&ops, Method::POST, Some(crate::support::ops::ADMIN), "web").await;
    assert_eq!(on.status(), 200);
    let on: Value = on.json().await.unwrap();
    assert_eq!(on["maintenance"], true);
    assert_eq!(on["changed_by"], "admin");
    assert_eq!(page().await, (503, "Back soon".to_string()));

    // A restart keeps the switch as set.
    let ops = ops.restart().await;
    assert_eq!(page().await, (503, "Back soon".to_string()));
    let off = switch(
        &ops,
        Method::DELETE,
        Some(crate::support::ops::ADMIN),
        "web",
    )
    .await;
    assert_eq!(off.status(), 200);
    assert_eq!(page().await.0, 200);
}

#[tokio::test]
async fn an_unreachable_upstream_is_a_502_page_and_a_slow_one_a_504_after_the_timeout() {
    let origin = Origin::new();
    let nothing = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let (_app, base) = proxied(&origin, nothing, "").await;
    let response = client().get(format!("{base}/")).send().await.unwrap();
    assert_eq!(response.status(), 502);
    let page = response.text().await.unwrap();
    assert!(
        page.contains("502 Bad Gateway") && page.contains("web did not answer"),
        "{page}"
    );

    let upstream = upstream(Arc::default()).await;
    let (_app, base) = proxied(&origin, upstream, "timeout = \"300ms\"\n").await;
    let response = client().get(format!("{base}/slow")).send().await.unwrap();
    assert_eq!(response.status(), 504);
    assert!(response
        .text()
        .await
        .unwrap()
        .contains("did not answer within"));
    // The upstream is fine otherwise.
    let response = client().get(format!("{base}/echo")).send().await.unwrap();
    assert_eq!(response.status(), 200);
}

/// Peak resident memory of a process, in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb * 1024
}

#[tokio::test]
async fn a_100_mb_upload_and_download_stream_through_the_dockhand_process_in_bounded_memory() {
    const SIZE: usize = 100 * 1024 * 1024;
    let origin = Origin::new();
    let upstream = upstream(Arc::default()).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("secret"), SECRET).unwrap();
    let proxy_port = free_port();
    let text = config_text(
        dir.path(),
        &origin,
        "",
        &format!("[apps.proxy]\nlisten = \"127.0.0.1:{proxy_port}\"\nupstream = \"{upstream}\"\n"),
    )
    .replacen("127.0.0.1:0", &format!("127.0.0.1:{}", free_port()), 1);
    let config = dir.path().join("dockhand.toml");
    std::fs::write(&config, text).unwrap();
    let server = Server::start(&config, &dir.path().join("log")).await;
    let base = format!("http://127.0.0.1:{proxy_port}");
    // Warm up (first connections, allocator arenas) before taking the baseline.
    let warm = client()
        .get(format!("{base}/download?bytes=1048576"))
        .send()
        .await
        .unwrap();
    assert_eq!(warm.bytes().await.unwrap().len(), 1 << 20);
    let before = peak_rss(server.pid());

    let response = client()
        .get(format!("{base}/download?bytes={SIZE}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut received = 0usize;
    let mut body = response.bytes_stream();
    while let Some(chunk) = body.next().await {
        received += chunk.unwrap().len();
    }
    assert_eq!(received, SIZE);

    let chunk = Bytes::from(vec![9u8; 256 * 1024]);
    let parts = futures_util::stream::iter(
        (0..SIZE / chunk.len()).map(move |_| Ok::<_, std::io::Error>(chunk.clone())),
    );
    let uploaded = client()
        .post(format!("{base}/upload"))
        .body(reqwest::Body::wrap_stream(parts))
        .send()
        .await
        .unwrap();
    assert_eq!(uploaded.text().await.unwrap(), SIZE.to_string());

    let grew = peak_rss(server.pid()).saturating_sub(before);
    assert!(
        grew < 32 * 1024 * 1024,
        "dockhand's peak memory grew by {} MiB moving 2 x 100 MiB: bodies are being buffered",
        grew >> 20
    );
}
