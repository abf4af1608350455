//! A hold on an app's proxied requests while its app server cannot answer (an in-place reload,
//! or a full deploy's old container paused while its tree changes), recorded as a `hold` step.

use tracing::warn;

use super::steps::Steps;
use crate::proxy::{HoldGuard, Proxy};
use crate::store::StepStage;

/// New requests wait in the proxy until [`Held::release`]; nothing is held without a proxy or
/// with `hold_timeout = "0s"`.
pub(super) struct Held<'a> {
    guard: Option<HoldGuard<'a>>,
    step: Option<i64>,
}

impl<'a> Held<'a> {
    /// Hold `proxy`'s new requests; `detail` says until when, for the step.
    pub async fn start(proxy: Option<&'a Proxy>, steps: &Steps, detail: &str) -> Held<'a> {
        let guard = proxy.and_then(|p| p.hold());
        let mut step = None;
        if guard.is_some() {
            step = steps.begin(StepStage::Hold, detail).await.ok();
        }
        Held { guard, step }
    }

    /// Let the held requests go on; the step records how many waited and for how long.
    pub async fn release(self, steps: &Steps) {
        let Some(guard) = self.guard else { return };
        let report = guard.release();
        let out = format!(
            "{} requests waited, released after {:?}",
            report.held, report.lasted
        );
        if let Some(step) = self.step {
            if let Err(e) = steps.end(step, &out).await {
                warn!(error = format!("{e:#}"), "recording the hold step failed");
            }
        }
    }
}
