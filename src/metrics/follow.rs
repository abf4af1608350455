//! Deploy metrics from the store's `DeployEvent` broadcast: a deploy's end (its row read once
//! for app, trigger, path and times) and each step's duration. The deploy pipeline counts
//! nothing itself.

use std::collections::HashMap;

use tokio::sync::broadcast::error::RecvError;
use tracing::warn;

use super::{AppLabel, DeployLabels, Metrics, PathLabels, StageLabels};
use crate::store::{Deploy, DeployEvent, DeployStatus, Store};

/// Open steps and the apps of deploys in flight, forgotten when their deploy ends. Bounded by
/// the deploys running at once (one per app) and their open steps.
#[derive(Default)]
struct Open {
    /// step id → when it started (unix ms).
    steps: HashMap<i64, i64>,
    /// deploy id → its app.
    apps: HashMap<i64, String>,
}

impl Metrics {
    /// Hear the store's events until it closes: start this before the workers run anything.
    /// A subscriber that falls behind skips what it missed (and warns), never blocks a deploy.
    pub fn follow(&self, store: Store) -> tokio::task::JoinHandle<()> {
        let metrics = self.clone();
        let mut events = store.subscribe();
        tokio::spawn(async move {
            let mut open = Open::default();
            loop {
                match events.recv().await {
                    Ok(event) => metrics.hear(&store, &mut open, event).await,
                    Err(RecvError::Lagged(missed)) => {
                        warn!(
                            missed,
                            "metrics fell behind the deploy events; some are not counted"
                        );
                    }
                    Err(RecvError::Closed) => return,
                }
            }
        })
    }

    async fn hear(&self, store: &Store, open: &mut Open, event: DeployEvent) {
        match event {
            DeployEvent::StepStarted { step, at, .. } => {
                open.steps.insert(step, at);
            }
            DeployEvent::StepEnded {
                deploy_id,
                step,
                stage,
                at,
                ..
            } => {
                let Some(started) = open.steps.remove(&step) else {
                    return;
                };
                let Some(app) = app_of(store, open, deploy_id).await else {
                    return;
                };
                self.0
                    .stage_duration
                    .get_or_create(&StageLabels {
                        app,
                        stage: stage.as_str(),
                    })
                    .observe(seconds(at - started));
            }
            DeployEvent::Status {
                deploy_id, status, ..
            } => {
                if !status.is_terminal() {
                    return;
                }
                open.apps.remove(&deploy_id);
                match store.deploy(deploy_id).await {
                    Ok(Some(deploy)) => self.ended(&deploy, status),
                    Ok(None) => {}
                    Err(e) => warn!(
                        deploy_id,
                        error = format!("{e:#}"),
                        "metrics: reading a finished deploy failed"
                    ),
                }
            }
        }
    }

    /// Count a deploy that ended with `status` (the event's: the row may have moved on).
    fn ended(&self, deploy: &Deploy, status: DeployStatus) {
        let path = deploy.path.map_or("none", |p| p.as_str());
        self.0
            .deploys
            .get_or_create(&DeployLabels {
                app: deploy.app.clone(),
                trigger: deploy.trigger.as_str(),
                path,
                status: status.as_str(),
            })
            .inc();
        if let (Some(started), Some(finished)) = (deploy.started_at, deploy.finished_at) {
            self.0
                .deploy_duration
                .get_or_create(&PathLabels {
                    app: deploy.app.clone(),
                    path,
                })
                .observe(seconds(finished - started));
        }
        if deploy.reverted {
            self.0
                .reverts
                .get_or_create(&AppLabel {
                    app: deploy.app.clone(),
                })
                .inc();
        }
        if status == DeployStatus::Succeeded {
            if let Some(finished) = deploy.finished_at {
                self.succeeded_at(&deploy.app, finished);
            }
        }
    }
}

/// The app of `deploy_id`, read once per deploy.
async fn app_of(store: &Store, open: &mut Open, deploy_id: i64) -> Option<String> {
    if let Some(app) = open.apps.get(&deploy_id) {
        return Some(app.clone());
    }
    let app = store.deploy(deploy_id).await.ok().flatten()?.app;
    open.apps.insert(deploy_id, app.clone());
    Some(app)
}

/// Milliseconds as seconds (never negative: a clock that stepped back counts as 0).
fn seconds(ms: i64) -> f64 {
    std::time::Duration::from_millis(u64::try_from(ms).unwrap_or(0)).as_secs_f64()
}
