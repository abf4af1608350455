//! The accept loop the API server and every proxy listener share: HTTP/1.1 and h2c (with
//! upgrades), a header read timeout (also for a connection that never sends a byte), a cap on
//! open connections, a header size cap, graceful shutdown.

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

/// Slow clients must send their request head within this, or the connection is closed; a
/// connection that sends nothing at all is closed after it too.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections open at once per listener; beyond it new ones wait in the kernel's backlog
/// until one closes (idle ones close after [`HEADER_READ_TIMEOUT`]), so a flood of idle
/// connections cannot take every file descriptor.
const MAX_CONNECTIONS: usize = 4096;
/// Largest request head (line + headers) accepted; hyper answers 431 beyond it.
const MAX_HEADER_BYTES: usize = 64 * 1024;
/// After it stops accepting, how long a connection without a request in progress is kept
/// open for its client's next request (answered with `Connection: close`) before it is closed.
/// Closing it at once loses a request on its way: one just accepted whose bytes have not been
/// read yet, or one a keep-alive client is sending (as HAProxy's `idle-close-on-response`).
const LINGER: Duration = Duration::from_millis(500);

pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What one listener allows its connections.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub header_timeout: Duration,
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            header_timeout: HEADER_READ_TIMEOUT,
            max_connections: MAX_CONNECTIONS,
        }
    }
}

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
    serve_with(listener, make, shutdown, grace, Limits::default()).await
}

/// [`serve`] with explicit [`Limits`].
pub(crate) async fn serve_with<S, B>(
    listener: TcpListener,
    make: impl Fn(SocketAddr) -> S,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
    limits: Limits,
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
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(MAX_HEADER_BYTES);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(MAX_HEADER_BYTES as u32);
    let graceful = GracefulShutdown::new();
    let draining = Arc::new(AtomicBool::new(false));
    let open = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    tokio::pin!(shutdown);
    loop {
        // A slot first: at the cap, new connections wait in the backlog, not in memory.
        let slot = tokio::select! {
            _ = &mut shutdown => break,
            slot = open.clone().acquire_owned() => slot.expect("never closed"),
        };
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
                let (builder, watcher) = (builder.clone(), graceful.watcher());
                let timeout = limits.header_timeout;
                tokio::spawn(async move {
                    let _slot = slot;
                    // hyper's header timeout starts with the first byte (HTTP/1 or h2 is told
                    // from it): a connection that sends none is closed here.
                    let mut first = [0u8; 1];
                    if !matches!(tokio::time::timeout(timeout, stream.peek(&mut first)).await, Ok(Ok(n)) if n > 0) {
                        return;
                    }
                    let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                    let _ = watcher.watch(conn.into_owned()).await;
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

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::time::Instant;

    use super::*;

    /// A server answering `200 ok` with `limits`; stops when the returned sender drops.
    async fn server(limits: Limits) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let make = |_| {
                hyper::service::service_fn(|_req: Request<Incoming>| async {
                    Ok::<_, std::convert::Infallible>(Response::new(http_body_util::Full::new(
                        bytes::Bytes::from_static(b"ok"),
                    )))
                })
            };
            let stopped = async {
                let _ = stopped.await;
            };
            serve_with(listener, make, stopped, Duration::from_secs(1), limits).await;
        });
        (addr, stop)
    }

    /// Blocking, on its own thread: whether the server closed `conn` within `within`.
    fn closed_within(mut conn: std::net::TcpStream, within: Duration) -> bool {
        conn.set_read_timeout(Some(within)).unwrap();
        let mut buf = [0u8; 64];
        loop {
            match conn.read(&mut buf) {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(_) => return false,
            }
        }
    }

    fn get(addr: SocketAddr) -> std::io::Result<String> {
        let mut c = std::net::TcpStream::connect(addr)?;
        c.set_read_timeout(Some(Duration::from_secs(5)))?;
        c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")?;
        let mut answer = String::new();
        c.read_to_string(&mut answer)?;
        Ok(answer)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_connection_that_never_sends_a_byte_is_closed_after_the_header_timeout() {
        let limits = Limits {
            header_timeout: Duration::from_millis(300),
            max_connections: 100,
        };
        let (addr, _stop) = server(limits).await;
        let idle = std::net::TcpStream::connect(addr).unwrap();
        let closed =
            tokio::task::spawn_blocking(move || closed_within(idle, Duration::from_secs(3)))
                .await
                .unwrap();
        assert!(closed, "an idle connection was kept open");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn idle_connections_beyond_the_cap_wait_and_the_server_keeps_answering() {
        let limits = Limits {
            header_timeout: Duration::from_millis(400),
            max_connections: 4,
        };
        let (addr, _stop) = server(limits).await;
        let answered = tokio::task::spawn_blocking(move || {
            // Twice the cap of connections that send nothing, held open by the client.
            let idle: Vec<_> = (0..8)
                .map(|_| std::net::TcpStream::connect(addr).unwrap())
                .collect();
            let start = Instant::now();
            let answer = get(addr);
            drop(idle);
            (answer, start.elapsed())
        })
        .await
        .unwrap();
        let (answer, took) = answered;
        let answer = answer.expect("the server stopped answering");
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(
            took < Duration::from_secs(4),
            "answered only after {took:?}"
        );
    }
}
