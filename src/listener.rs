//! The accept loop the API server and every proxy listener share: HTTP/1.1 and h2c (with
//! upgrades), a header read timeout and a header size cap, graceful shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hyper::body::{Body, Incoming};
use hyper::service::Service;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tracing::warn;

/// Slow clients must send their request head within this, or the connection is closed.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest request head (line + headers) accepted; hyper answers 431 beyond it.
const MAX_HEADER_BYTES: usize = 64 * 1024;
/// After it stops accepting, how long a connection without a request in progress is kept
/// open for its client's next request (answered with `Connection: close`) before it is closed.
/// Closing it at once loses a request on its way: one just accepted whose bytes have not been
/// read yet, or one a keep-alive client is sending (as HAProxy's `idle-close-on-response`).
const LINGER: Duration = Duration::from_millis(500);

pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Accept connections on `listener` until `shutdown` resolves, serving each with the service
/// `make(peer)` returns; then stop accepting and wait (at most `grace`) for open connections.
/// Returns whether every connection finished in time.
pub(crate) async fn serve<S, B>(
    listener: TcpListener,
    make: impl Fn(SocketAddr) -> S,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) -> bool
where
    S: Service<Request<Incoming>, Response = Response<B>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_HEADER_BYTES);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(MAX_HEADER_BYTES as u32);
    let graceful = GracefulShutdown::new();
    let draining = Arc::new(AtomicBool::new(false));
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(conn) => conn,
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning.
                        warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let service = CloseWhenDraining {
                    inner: make(peer),
                    draining: draining.clone(),
                };
                let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                let conn = graceful.watch(conn.into_owned());
                tokio::spawn(async move {
                    let _ = conn.await;
                });
            }
        }
    }
    drop(listener);
    // Connections still open get their client's next request answered, then close.
    draining.store(true, Ordering::Release);
    let started = tokio::time::Instant::now();
    while graceful.count() > 0 && started.elapsed() < LINGER.min(grace) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let left = grace.saturating_sub(started.elapsed());
    tokio::time::timeout(left, graceful.shutdown())
        .await
        .is_ok()
}

/// A connection's service that, once the server drains, asks HTTP/1 clients to close the
/// connection after each response to a request that arrived since (an upgrade's 101
/// excepted). Requests already in flight then close with the graceful shutdown after the
/// linger. No allocation or shared-counter traffic per request: this wraps every request of
/// the API and of every proxy.
struct CloseWhenDraining<S> {
    inner: S,
    draining: Arc<AtomicBool>,
}

impl<S, B> Service<Request<Incoming>> for CloseWhenDraining<S>
where
    S: Service<Request<Incoming>, Response = Response<B>>,
{
    type Response = Response<B>;
    type Error = S::Error;
    type Future = Closing<S::Future>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let close = req.version() < hyper::Version::HTTP_2 && self.draining.load(Ordering::Acquire);
        Closing {
            answer: self.inner.call(req),
            close,
        }
    }
}

pin_project_lite::pin_project! {
    /// A response future that adds `Connection: close` to its response when `close`.
    pub(crate) struct Closing<F> {
        #[pin]
        answer: F,
        close: bool,
    }
}

impl<F, B, E> Future for Closing<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<B>, E>;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let this = self.project();
        let mut resp = std::task::ready!(this.answer.poll(cx))?;
        if *this.close && resp.status() != hyper::StatusCode::SWITCHING_PROTOCOLS {
            resp.headers_mut().insert(
                hyper::header::CONNECTION,
                hyper::header::HeaderValue::from_static("close"),
            );
        }
        std::task::Poll::Ready(Ok(resp))
    }
}
