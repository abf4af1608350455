//! `GET /api/deploys/{id}/events`: Server-Sent Events for one deploy.
//!
//! Each step as it starts (`event: step`, `"state": "started"`) and as it ends (`"ended"`, with
//! `ok` and its output), then the terminal status (`event: status`), then the stream closes. A
//! finished deploy is replayed from its rows; a running one is replayed, then followed live.
//!
//! No polling: the stream subscribes to the store's event broadcast *before* reading the rows,
//! so every change after the read is heard, and drops what the read already showed by step id.
//! Only a subscriber that lags behind the broadcast reads the rows again.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::convert::Infallible;

use axum::extract::{Path, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::get;
use axum::Router;
use futures_util::Stream;

use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{broadcast, mpsc};

use super::api::readable_deploy;
use super::auth::Reader;
use super::error::ApiError;
use crate::api::{StatusEvent, StepEvent};
use crate::services::Services;
use crate::store::{rfc3339, Deploy, DeployEvent, DeployStatus, Step, StepStage, Store};

/// `GET /api/deploys/{id}/events`.
pub(super) fn router() -> Router<Services> {
    Router::new().route("/api/deploys/{id}/events", get(deploy_events))
}

/// `GET /api/deploys/{id}/events`
async fn deploy_events(
    State(state): State<Services>,
    Path(id): Path<String>,
    caller: Reader,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    // Subscribed before the rows are read: nothing between the read and the live events is lost.
    let live = state.store.subscribe();
    let deploy = readable_deploy(&state, &caller, &id).await?;
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(follow(state.store.clone(), deploy, live, tx));
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|event| (Ok(event), rx))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

/// Which steps a stream has shown: `false` started, `true` ended too.
type Seen = HashMap<i64, bool>;

/// Feed `tx` until the deploy's terminal status was sent or the client went away.
async fn follow(
    store: Store,
    deploy: Deploy,
    mut live: broadcast::Receiver<DeployEvent>,
    tx: mpsc::Sender<Event>,
) {
    let id = deploy.id;
    let mut seen = Seen::new();
    let Ok(done) = replay(&store, deploy, &mut seen, &tx).await else {
        return;
    };
    if done {
        return;
    }
    loop {
        let received = tokio::select! {
            // The client went away: stop now, not at the deploy's next event.
            () = tx.closed() => return,
            received = live.recv() => received,
        };
        let event = match received {
            Ok(event) if event.deploy_id() == id => event,
            Ok(_) => continue,
            Err(RecvError::Lagged(_)) => {
                // Fell behind the broadcast: catch up from the rows instead.
                let Ok(Some(deploy)) = store.deploy(id).await else {
                    return;
                };
                match replay(&store, deploy, &mut seen, &tx).await {
                    Ok(false) => continue,
                    _ => return,
                }
            }
            Err(RecvError::Closed) => return,
        };
        let Some((sse, terminal)) = live_event(event, &mut seen) else {
            continue;
        };
        if tx.send(sse).await.is_err() || terminal {
            return;
        }
    }
}

/// A live event of this deploy as the SSE event to send and whether it is the terminal status;
/// `None` for a step the stream has shown already (the replay read it from the rows).
fn live_event(event: DeployEvent, seen: &mut Seen) -> Option<(Event, bool)> {
    let shown = match event {
        DeployEvent::StepStarted {
            step,
            stage,
            detail,
            at,
            ..
        } => {
            let Entry::Vacant(unseen) = seen.entry(step) else {
                return None;
            };
            unseen.insert(false);
            (step_started(step, stage, detail.as_deref(), at), false)
        }
        DeployEvent::StepEnded {
            step,
            stage,
            ok,
            output,
            at,
            ..
        } => {
            if seen.get(&step) == Some(&true) {
                return None;
            }
            seen.insert(step, true);
            (
                step_ended(step, stage, Some(ok), Some(&output), Some(at)),
                false,
            )
        }
        DeployEvent::Status {
            status,
            reason,
            error,
            ..
        } => (
            status_event(status, reason.as_deref(), error.as_deref()),
            status.is_terminal(),
        ),
    };
    Some(shown)
}

/// Send what the rows show and the stream has not: each step, then the current status.
/// `Ok(true)` when the terminal status was sent.
async fn replay(
    store: &Store,
    deploy: Deploy,
    seen: &mut Seen,
    tx: &mpsc::Sender<Event>,
) -> Result<bool, ()> {
    let steps: Vec<Step> = store.steps(deploy.id).await.map_err(|_| ())?;
    for s in steps {
        if let Entry::Vacant(unseen) = seen.entry(s.id) {
            unseen.insert(false);
            let event = step_started(s.id, s.stage, s.detail.as_deref(), s.started_at);
            tx.send(event).await.map_err(|_| ())?;
        }
        if s.finished_at.is_some() && seen.get(&s.id) != Some(&true) {
            seen.insert(s.id, true);
            let event = step_ended(s.id, s.stage, s.ok, s.output.as_deref(), s.finished_at);
            tx.send(event).await.map_err(|_| ())?;
        }
    }
    let event = status_event(
        deploy.status,
        deploy.reason.as_deref(),
        deploy.error.as_deref(),
    );
    tx.send(event).await.map_err(|_| ())?;
    Ok(deploy.status.is_terminal())
}

fn step_started(step: i64, stage: StepStage, detail: Option<&str>, at: i64) -> Event {
    let data = StepEvent {
        step,
        stage: stage.as_str().to_string(),
        state: "started".to_string(),
        detail: detail.map(str::to_string),
        ok: None,
        output: None,
        at: Some(rfc3339(at)),
    };
    json_event("step", Some(format!("{step}-started")), &data)
}

fn step_ended(
    step: i64,
    stage: StepStage,
    ok: Option<bool>,
    output: Option<&str>,
    at: Option<i64>,
) -> Event {
    let data = StepEvent {
        step,
        stage: stage.as_str().to_string(),
        state: "ended".to_string(),
        detail: None,
        ok,
        output: output.map(str::to_string),
        at: at.map(rfc3339),
    };
    json_event("step", Some(format!("{step}-ended")), &data)
}

fn status_event(status: DeployStatus, reason: Option<&str>, error: Option<&str>) -> Event {
    let data = StatusEvent {
        status: status.as_str().to_string(),
        reason: reason.map(str::to_string),
        error: error.map(str::to_string),
    };
    json_event("status", None, &data)
}

/// An SSE event named `name` whose data is `data` as JSON.
fn json_event(name: &str, id: Option<String>, data: &impl serde::Serialize) -> Event {
    let event = Event::default().event(name);
    let event = match id {
        Some(id) => event.id(id),
        None => event,
    };
    event.data(serde_json::to_string(data).unwrap_or_default())
}
