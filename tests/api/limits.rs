//! Oversized, lying and slow requests (SECURITY.md 39).

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::helpers::*;

/// Read the status code of the first response on `stream`.
async fn status_of(stream: &mut TcpStream) -> u16 {
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
        .await
        .expect("no answer")
        .unwrap();
    let head = String::from_utf8_lossy(&buf[..n]);
    head.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not HTTP: {head:?}"))
}

const HEAD: &str = "POST /hooks/github HTTP/1.1\r\nHost: 127.0.0.1\r\nX-GitHub-Event: push\r\nX-GitHub-Delivery: d1\r\n\
                    X-Hub-Signature-256: sha256=0000000000000000000000000000000000000000000000000000000000000000\r\n\
                    Content-Type: application/json\r\n";

#[tokio::test]
async fn a_body_over_the_limit_is_413_by_its_declared_length_without_reading_it() {
    let origin = Origin::new();
    let app = spawn_app_with(&origin, "body_limit = \"4KiB\"", "").await;
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    stream
        .write_all(format!("{HEAD}Content-Length: 10000000\r\n\r\n").as_bytes())
        .await
        .unwrap();
    assert_eq!(status_of(&mut stream).await, 413);
}

#[tokio::test]
async fn a_chunked_body_over_the_limit_is_413_while_streaming() {
    let origin = Origin::new();
    let app = spawn_app_with(&origin, "body_limit = \"4KiB\"", "").await;
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    stream
        .write_all(format!("{HEAD}Transfer-Encoding: chunked\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let chunk = format!("400\r\n{}\r\n", "x".repeat(0x400));
    // Far more than the limit, never terminated: the answer must come before the body ends.
    for _ in 0..16 {
        if stream.write_all(chunk.as_bytes()).await.is_err() {
            break;
        }
    }
    assert_eq!(status_of(&mut stream).await, 413);
    assert!(app.get("/api/apps/web/deploys").await["deploys"]
        .as_array()
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn a_huge_header_block_is_refused() {
    let origin = Origin::new();
    let app = spawn_app(&origin).await;
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    let filler = format!("X-Filler: {}\r\n", "a".repeat(8000)).repeat(16);
    let _ = stream
        .write_all(format!("{HEAD}{filler}Content-Length: 2\r\n\r\n{{}}").as_bytes())
        .await;
    let status = status_of(&mut stream).await;
    assert!(status == 431 || status == 400, "status {status}");
}

#[tokio::test]
async fn a_client_that_trickles_its_body_gets_408_at_the_request_deadline() {
    let origin = Origin::new();
    let app = spawn_app_with(&origin, "request_timeout = \"1s\"", "").await;
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    stream
        .write_all(format!("{HEAD}Content-Length: 100\r\n\r\n{{").as_bytes())
        .await
        .unwrap();
    let started = std::time::Instant::now();
    assert_eq!(status_of(&mut stream).await, 408);
    assert!(
        started.elapsed() < Duration::from_secs(9),
        "the deadline was not enforced"
    );
}
