//! The server's side of the wire: its records (store rows, config, proxy status) turned into
//! the `api` types the answers carry.

use crate::api::{
    ContainerView, DeployView, DeployedView, LockView, ProxyView, ReloadView, StepView,
};
use crate::config::Reload;
use crate::proxy::ProxyStatus;
use crate::store::{rfc3339, AppLock, AppState, Deploy, Step};

/// A deploy row, with its duration and URL (no steps).
pub(super) fn deploy(d: Deploy) -> DeployView {
    DeployView {
        url: format!("/api/deploys/{}", d.id),
        duration_ms: d.started_at.zip(d.finished_at).map(|(s, f)| f - s),
        id: d.id,
        app: d.app,
        delivery_id: d.delivery_id,
        trigger: d.trigger.to_string(),
        actor: d.actor,
        git_ref: d.git_ref,
        requested_sha: d.requested_sha,
        forced: d.forced,
        from_commit: d.from_commit.map(|c| c.to_string()),
        to_commit: d.to_commit.map(|c| c.to_string()),
        path: d.path.map(|p| p.to_string()),
        reason: d.reason,
        status: d.status.to_string(),
        superseded_by: d.superseded_by,
        error: d.error,
        created_at: rfc3339(d.created_at),
        started_at: d.started_at.map(rfc3339),
        finished_at: d.finished_at.map(rfc3339),
        image: d.image,
        digest: d.digest,
        reverted: d.reverted,
        requested_path: d.requested_path.map(|p| p.to_string()),
        rollback_of: d.rollback_of,
        promoted_from: d.promoted_from,
        subject: d.subject,
        steps: None,
    }
}

/// A step row, with its duration.
pub(super) fn step(s: Step) -> StepView {
    StepView {
        duration_ms: s.finished_at.map(|f| f - s.started_at),
        stage: s.stage.to_string(),
        detail: s.detail,
        output: s.output,
        ok: s.ok,
        started_at: rfc3339(s.started_at),
        finished_at: s.finished_at.map(rfc3339),
    }
}

/// An app lock: who, when and why.
pub(super) fn lock(l: &AppLock) -> LockView {
    LockView {
        reason: l.reason.clone(),
        locked_by: l.locked_by.clone(),
        locked_at: rfc3339(l.locked_at),
    }
}

/// An app's configured reload; `None` for none.
pub(super) fn reload(r: &Reload) -> Option<ReloadView> {
    Some(match r {
        Reload::Touch(p) => ReloadView::Touch(p.display().to_string()),
        Reload::Signal(signal) => ReloadView::Signal(signal.clone()),
        Reload::Exec(argv) => ReloadView::Exec(argv.clone()),
        Reload::Restart => ReloadView::Restart(true),
        Reload::Swap => ReloadView::Swap(true),
        Reload::None => return None,
    })
}

/// The deployed commit, and the live container when there is one.
pub(super) fn deployed(d: &AppState) -> (DeployedView, Option<ContainerView>) {
    let deployed = DeployedView {
        commit: d.commit_sha.to_string(),
        deploy_id: d.deploy_id,
        since: rfc3339(d.updated_at),
    };
    let container = d.container_id.as_ref().map(|id| ContainerView {
        id: id.clone(),
        image: d.image.clone(),
        digest: d.digest.clone(),
        port: d.port,
        since: rfc3339(d.updated_at),
    });
    (deployed, container)
}

/// What the proxy sends to now, with the digest of the image behind it (when it sends to the
/// recorded live container).
pub(super) fn proxy(status: ProxyStatus, deployed: Option<&AppState>) -> ProxyView {
    let digest = deployed
        .filter(|d| d.container_id.is_some() && d.container_id == status.container)
        .and_then(|d| d.digest.clone());
    ProxyView {
        listen: status.listen.to_string(),
        upstream: status.upstream,
        container: status.container,
        since: status.since.and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        }),
        in_flight: status.in_flight,
        maintenance: status.maintenance,
        held: status.held,
        digest,
    }
}

/// An outbox row as the API shows it.
pub(super) fn notification(m: crate::store::SentMessage) -> crate::api::NotificationView {
    let state = match (m.delivered_at, m.gave_up_at) {
        (Some(_), _) => "delivered",
        (None, Some(_)) => "gave_up",
        (None, None) => "pending",
    };
    crate::api::NotificationView {
        id: m.id,
        receiver: m.receiver,
        deploy_id: m.deploy_id,
        event: m.event,
        state: state.to_string(),
        attempts: m.attempts,
        last_error: m.last_error,
        created_at: rfc3339(m.created_at),
        next_attempt_at: (state == "pending").then(|| rfc3339(m.next_at)),
        delivered_at: m.delivered_at.map(rfc3339),
        gave_up_at: m.gave_up_at.map(rfc3339),
    }
}
