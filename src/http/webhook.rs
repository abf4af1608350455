//! `POST /hooks/github[/{app}]`: verify, record, queue, answer — in that order.
//!
//! The body arrives capped (413 while streaming, before any HMAC work). The signature is checked
//! over the raw bytes before anything is parsed. A delivery is in SQLite before it is
//! acknowledged, and a redelivery of a recorded one triggers nothing.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use tokio::sync::Semaphore;
use tracing::info;

use super::error::ApiError;
use crate::api::{QueuedDeploy, WebhookAnswer};
use crate::config::AppConfig;
use crate::deploy::triage::{triage, Triage};
use crate::github::events::{self, Event, Push};
use crate::github::signature::{Signature, SignatureError};
use crate::services::Services;
use crate::store::{Delivery, DeliveryOutcome, NewDelivery, NewPushDeploy};

const SIGNATURE: &str = "x-hub-signature-256";
const EVENT: &str = "x-github-event";
const DELIVERY: &str = "x-github-delivery";
const HOOK_ID: &str = "x-github-hook-id";

/// `POST /hooks/github[/{app}]`; each delivery's body is read only once it holds one of
/// `bodies`' permits.
pub(super) fn router(bodies: Arc<Semaphore>) -> Router<Services> {
    Router::new()
        .route("/hooks/github", post(receive))
        .route("/hooks/github/{app}", post(receive_for_app))
        .route_layer(middleware::from_fn_with_state(bodies, one_body_slot))
}

async fn one_body_slot(State(slots): State<Arc<Semaphore>>, req: Request, next: Next) -> Response {
    let _slot = slots.acquire_owned().await;
    next.run(req).await
}

/// `POST /hooks/github`: the apps are those whose secret verifies the signature and whose
/// repository the payload names.
async fn receive(
    State(state): State<Services>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let signature = Signature::parse(signature_header(&headers)?)?;
    let apps: Vec<&AppConfig> = state
        .config
        .apps
        .iter()
        .filter(|app| {
            app.secret
                .as_ref()
                .is_some_and(|secret| signature.verify(secret.expose(), &body).is_ok())
        })
        .collect();
    if apps.is_empty() {
        return Err(SignatureError::Mismatch.into());
    }
    let names: Vec<String> = apps.iter().map(|a| a.name.clone()).collect();
    handle_to_the_end(state, names, headers, body).await
}

/// A verified delivery is recorded and queued to its end, whatever becomes of its caller.
async fn handle_to_the_end(
    state: Services,
    apps: Vec<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    super::to_the_end(async move {
        let apps: Vec<&AppConfig> = apps.iter().filter_map(|n| state.config.app(n)).collect();
        let answered = handle(&state, &apps, &headers, &body).await;
        count(&state, &apps, &answered);
        answered
    })
    .await
}

/// What a recorded delivery came to, carried on its answer for [`count`].
#[derive(Clone)]
struct Tally {
    /// The outcome of each app that queued nothing: `ignored`, `ping` or `duplicate`.
    others: &'static str,
    /// `(app, deploy id)` queued, and which of them were recorded locked.
    deploys: Vec<(String, i64)>,
    locked: Vec<i64>,
}

/// Count the delivery once for each app whose secret verified it: `deploy`, `locked`,
/// `ignored`, `ping`, `duplicate`, or `refused` (a bad header or body, a full queue).
fn count(state: &Services, apps: &[&AppConfig], answered: &Result<Response, ApiError>) {
    let tally = answered
        .as_ref()
        .ok()
        .and_then(|r| r.extensions().get::<Tally>());
    for app in apps {
        let outcome = match tally {
            None => "refused",
            Some(t) if t.others == "duplicate" => "duplicate",
            Some(t) => match t.deploys.iter().find(|(a, _)| *a == app.name) {
                Some((_, id)) if t.locked.contains(id) => "locked",
                Some(_) => "deploy",
                None => t.others,
            },
        };
        state.metrics.delivery(&app.name, outcome);
    }
}

/// `POST /hooks/github/{app}`: one app, its secret (none: 401, the app only polls).
async fn receive_for_app(
    State(state): State<Services>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let app = state
        .config
        .app(&name)
        .ok_or_else(|| ApiError::NotFound(format!("unknown app {name:?}")))?;
    let signature = Signature::parse(signature_header(&headers)?)?;
    // An app without a secret takes no webhooks: refused like a bad signature, never unsigned.
    let secret = app.secret.as_ref().ok_or(SignatureError::Mismatch)?;
    signature.verify(secret.expose(), &body)?;
    let names = vec![app.name.clone()];
    handle_to_the_end(state, names, headers, body).await
}

/// The signature header's bytes: at most one (a second one could carry a valid signature
/// a proxy or a parser other than ours would read instead).
fn signature_header(headers: &HeaderMap) -> Result<Option<&[u8]>, SignatureError> {
    let mut all = headers.get_all(SIGNATURE).iter();
    let first = all.next();
    if all.next().is_some() {
        return Err(SignatureError::Duplicate);
    }
    Ok(first.map(|v| v.as_bytes()))
}

/// A printable, bounded header value; `None` when absent; two of them are refused.
fn header_value<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, ApiError> {
    let mut all = headers.get_all(name).iter();
    let Some(value) = all.next() else {
        return Ok(None);
    };
    if all.next().is_some() {
        return Err(ApiError::BadRequest(format!(
            "header {name} appears more than once: send exactly one"
        )));
    }
    let value = value
        .to_str()
        .ok()
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .ok_or_else(|| {
            ApiError::BadRequest(format!(
                "header {name} must be 1-128 printable ASCII characters"
            ))
        })?;
    Ok(Some(value))
}

/// A verified delivery: read its headers and body, record it, queue what it deploys, answer.
async fn handle(
    state: &Services,
    apps: &[&AppConfig],
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, ApiError> {
    let event_name = header_value(headers, EVENT)?
        .ok_or_else(|| ApiError::BadRequest(format!("missing {EVENT} header")))?;
    let delivery_id = header_value(headers, DELIVERY)?
        .ok_or_else(|| ApiError::BadRequest(format!("missing {DELIVERY} header")))?;
    let hook_id = header_value(headers, HOOK_ID)?.unwrap_or_default();

    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let json = events::json_body(content_type, body)?;
    let event = events::parse(event_name, &json)?;

    let mut new = NewDelivery {
        delivery: delivery_id,
        hook_id,
        event: event_name,
        repository: None,
        git_ref: None,
        after_sha: None,
        outcome: DeliveryOutcome::Ignored,
        reason: None,
    };
    let push = match &event {
        Event::Ping { .. } => return record_ping(state, new).await,
        Event::Other(name) => {
            let reason = format!("event {name:?} is not handled; dockhand deploys on push");
            new.reason = Some(&reason);
            return record_ignored(state, &new).await;
        }
        Event::Push(push) => push,
    };
    new.repository = Some(&push.repository.full_name);
    new.git_ref = Some(&push.git_ref);
    new.after_sha = Some(&push.after);

    let (deploying, reasons) = triage_all(apps, push);
    let reason = reasons.join("; ");
    if deploying.is_empty() {
        new.reason = Some(&reason);
        return record_ignored(state, &new).await;
    }
    queue_push(state, new, push, &deploying, &reason).await
}

/// A ping: recorded, answered `pong`.
async fn record_ping(state: &Services, mut new: NewDelivery<'_>) -> Result<Response, ApiError> {
    new.outcome = DeliveryOutcome::Ping;
    match state.store.record_delivery(&new, &[]).await? {
        Some(d) => {
            let mut response = (
                StatusCode::OK,
                Json(WebhookAnswer {
                    status: "pong".to_string(),
                    delivery: d.delivery,
                    ..WebhookAnswer::default()
                }),
            )
                .into_response();
            response.extensions_mut().insert(Tally {
                others: "ping",
                deploys: Vec::new(),
                locked: Vec::new(),
            });
            Ok(response)
        }
        None => Ok(redelivered(state, new.delivery, new.hook_id).await?),
    }
}

/// A push that deploys `deploying`: queue room reserved for each, then the delivery and its
/// deploys recorded in one transaction, then the workers told (all but the locked apps'), then
/// 202. `reason` says why the other apps do not deploy it.
async fn queue_push<'a>(
    state: &Services,
    mut new: NewDelivery<'a>,
    push: &Push,
    deploying: &[&AppConfig],
    reason: &'a str,
) -> Result<Response, ApiError> {
    let (delivery_id, hook_id) = (new.delivery, new.hook_id);
    // Reserve queue room before persisting, so an acknowledged delivery always reaches a worker.
    // A redelivery is caught by the unique key when it is recorded; only when the queue is full
    // must it be looked up first, to answer 200 rather than 503.
    let mut permits = Vec::with_capacity(deploying.len());
    for app in deploying {
        match state.deployer.reserve(&app.name) {
            Ok(permit) => permits.push(permit),
            Err(e) => {
                return match state.store.find_delivery(delivery_id, hook_id).await? {
                    Some(first) => Ok(duplicate(&first)),
                    None => Err(e.into()),
                }
            }
        }
    }
    let actor = push.pusher.as_deref();
    let queued: Vec<NewPushDeploy> = deploying
        .iter()
        .map(|app| NewPushDeploy {
            app: &app.name,
            git_ref: &push.git_ref,
            requested_sha: &push.after,
            forced: push.forced,
            actor,
        })
        .collect();
    new.outcome = DeliveryOutcome::Deploy;
    new.reason = (!reason.is_empty()).then_some(reason);
    let Some(recorded) = state.store.record_delivery(&new, &queued).await? else {
        return redelivered(state, delivery_id, hook_id).await;
    };
    for (permit, (_, deploy_id)) in permits.into_iter().zip(&recorded.deploys) {
        if !recorded.locked.contains(deploy_id) {
            permit.send(*deploy_id);
        }
    }
    info!(delivery = delivery_id, git_ref = push.git_ref, deploys = ?recorded.deploys, locked = ?recorded.locked, "push recorded");
    let word = if recorded.locked.len() == recorded.deploys.len() {
        "locked"
    } else {
        "queued"
    };
    Ok(answer(StatusCode::ACCEPTED, word, &recorded))
}

/// Which apps deploy this push, and why each other one does not.
fn triage_all<'a>(apps: &[&'a AppConfig], push: &Push) -> (Vec<&'a AppConfig>, Vec<String>) {
    let mut deploying = Vec::new();
    let mut reasons = Vec::new();
    for app in apps {
        match triage(app, push) {
            Triage::Deploy => deploying.push(*app),
            Triage::Ignore(reason) => reasons.push(reason),
        }
    }
    (deploying, reasons)
}

async fn record_ignored(state: &Services, new: &NewDelivery<'_>) -> Result<Response, ApiError> {
    match state.store.record_delivery(new, &[]).await? {
        Some(d) => Ok(answer(StatusCode::ACCEPTED, "ignored", &d)),
        None => redelivered(state, new.delivery, new.hook_id).await,
    }
}

/// The same delivery was recorded concurrently: answer as for any redelivery.
async fn redelivered(
    state: &Services,
    delivery: &str,
    hook_id: &str,
) -> Result<Response, ApiError> {
    let first = state
        .store
        .find_delivery(delivery, hook_id)
        .await?
        .ok_or_else(|| anyhow::anyhow!("delivery {delivery} conflicted but is not recorded"))?;
    Ok(duplicate(&first))
}

fn duplicate(first: &Delivery) -> Response {
    answer(StatusCode::OK, "duplicate", first)
}

/// The JSON answer for a recorded delivery; `Location` names its (first) deploy.
fn answer(status: StatusCode, word: &str, d: &Delivery) -> Response {
    let deploys = d
        .deploys
        .iter()
        .map(|(app, id)| QueuedDeploy {
            app: app.clone(),
            deploy_id: *id,
            url: format!("/api/deploys/{id}"),
            status: d.locked.contains(id).then(|| "locked".to_string()),
        })
        .collect();
    let first = d.deploys.first();
    let body = WebhookAnswer {
        status: word.to_string(),
        delivery: d.delivery.clone(),
        deploys: Some(deploys),
        reason: d.reason.clone(),
        deploy_id: first.map(|(_, id)| *id),
        app: first.map(|(app, _)| app.clone()),
        outcome: (word == "duplicate").then(|| d.outcome.clone()),
    };
    let mut response = (status, Json(body)).into_response();
    response.extensions_mut().insert(Tally {
        others: if word == "duplicate" {
            "duplicate"
        } else {
            "ignored"
        },
        deploys: d.deploys.clone(),
        locked: d.locked.clone(),
    });
    if let Some(location) = first.and_then(|(_, id)| format!("/api/deploys/{id}").parse().ok()) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::sync::Arc;
    use std::task::Poll;
    use std::time::Duration;

    use hmac::{Hmac, Mac};
    use sha2::Sha256;

    use super::*;
    use crate::config::Config;
    use crate::deploy::Deployer;
    use crate::proxy::Proxies;
    use crate::store::Store;

    const PUSH: &[u8] = include_bytes!("../../tests/fixtures/github/push-branch.json");

    fn signed(body: &[u8]) -> HeaderMap {
        let mut mac = Hmac::<Sha256>::new_from_slice(b"s3cret").unwrap();
        mac.update(body);
        let hex: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let mut headers = HeaderMap::new();
        for (name, value) in [
            (SIGNATURE, format!("sha256={hex}")),
            (EVENT, "push".to_string()),
            (DELIVERY, "d-1".to_string()),
            (HOOK_ID, "1".to_string()),
            ("content-type", "application/json".to_string()),
        ] {
            headers.insert(name, value.parse().unwrap());
        }
        headers
    }

    /// The window of issue 12's defect 6: the caller's future (a request timed out, a client
    /// gone) is dropped after the delivery's transaction committed and before the worker was
    /// told. The deploy must still reach the worker, not stay `queued` until a restart.
    #[tokio::test]
    async fn a_delivery_whose_caller_goes_away_after_it_was_recorded_still_reaches_the_worker() {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "[server]\nstate_dir = \"{state}\"\n[[apps]]\nname = \"web\"\n\
             repo = \"https://github.com/Codertocat/Hello-World.git\"\nbranch = \"master\"\n\
             secret = \"s3cret\"\nvolume = \"{volume}\"\n",
            state = dir.path().join("state").display(),
            volume = dir.path().join("web").display(),
        );
        let config = Arc::new(Config::parse(&text, dir.path()).unwrap().0);
        let store = Store::open(&dir.path().join("dockhand.db")).await.unwrap();
        let (deployer, mut receivers) = Deployer::for_test(&["web"], 4);
        let metrics = crate::metrics::Metrics::new(&config);
        let state =
            Services::new(config, store.clone(), Proxies::default(), deployer, metrics).unwrap();

        let mut call = Box::pin(receive_for_app(
            State(state),
            Path("web".to_string()),
            signed(PUSH),
            Bytes::from_static(PUSH),
        ));
        // Drive the call one poll at a time and look at the store between polls: stop polling
        // the moment its transaction is committed, before it could send to the worker.
        let mut polls = 0;
        loop {
            let polled = std::future::poll_fn(|cx| Poll::Ready(call.as_mut().poll(cx))).await;
            assert!(
                polled.is_pending(),
                "the call finished before its commit could be seen; nothing was tested"
            );
            polls += 1;
            tokio::time::sleep(Duration::from_millis(5)).await;
            if store.deploy(1).await.unwrap().is_some() {
                break;
            }
            assert!(polls < 1_000, "the deploy was never recorded");
        }
        drop(call);

        let rx = receivers.get_mut("web").unwrap();
        let sent = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await;
        assert_eq!(
            sent.ok().flatten(),
            Some(1),
            "deploy 1 is recorded queued, but its worker was never told"
        );
    }
}
