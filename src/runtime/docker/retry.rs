//! Retrying an engine call after a lost connection (SECURITY.md 37): only calls that are
//! idempotent go through here, and only errors where the engine said nothing (the socket
//! closed, the engine restarting) are retried, a bounded number of times.

use std::time::Duration;

use bollard::errors::Error as BollardError;

/// Waits before retrying a call whose connection was lost (SECURITY.md 37): the engine may be
/// restarting, or the socket closed mid-call.
pub(super) const RETRY_DELAYS: [Duration; 3] = [
    Duration::from_millis(200),
    Duration::from_secs(1),
    Duration::from_secs(3),
];

/// The call may not have reached the engine, or its answer was lost: nothing the engine said.
pub(super) fn transient(e: &BollardError) -> bool {
    matches!(
        e,
        BollardError::IOError { .. }
            | BollardError::HyperResponseError { .. }
            | BollardError::HyperLegacyError { .. }
            | BollardError::SocketNotFoundError(_)
    )
}

/// Run an idempotent engine call, again after a lost connection.
pub(super) async fn retrying<T, F, Fut>(what: &str, mut call: F) -> Result<T, BollardError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, BollardError>>,
{
    let mut delays = RETRY_DELAYS.iter();
    loop {
        match call().await {
            Err(e) if transient(&e) => match delays.next() {
                Some(delay) => {
                    tracing::warn!(error = %e, ?delay, "{what}: lost the engine connection; retrying");
                    tokio::time::sleep(*delay).await;
                }
                None => return Err(e),
            },
            other => return other,
        }
    }
}

/// The HTTP status of an engine error answer, if it was one.
pub(super) fn status(e: &BollardError) -> Option<u16> {
    match e {
        BollardError::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}
