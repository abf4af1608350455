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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::Config;
    use crate::store::{DeployPath, NewApiDeploy, StepStage, Trigger};

    async fn setup(dir: &std::path::Path) -> (Config, Store) {
        let text = format!(
            "[server]\nstate_dir = \"{state}\"\n[[apps]]\nname = \"web\"\n\
             repo = \"https://github.com/o/r.git\"\nsecret = \"s3cret\"\nvolume = \"{volume}\"\n",
            state = dir.join("state").display(),
            volume = dir.join("web").display(),
        );
        let config = Config::parse(&text, dir).unwrap().0;
        let store = Store::open(&dir.join("dockhand.db")).await.unwrap();
        (config, store)
    }

    /// A manual fast deploy of `web`, queued and started, with one `sync` step done.
    async fn started(store: &Store) -> i64 {
        let id = store
            .queue_api_deploy(&NewApiDeploy::manual("web", &"a".repeat(40)))
            .await
            .unwrap();
        store.start_deploy(id, None).await.unwrap();
        store
            .plan_deploy(
                id,
                "a".repeat(40).parse().unwrap(),
                DeployPath::Fast,
                "test",
                "subject",
            )
            .await
            .unwrap();
        let step = store.begin_step(id, StepStage::Sync, "").await.unwrap();
        store.end_step(step, true, "").await.unwrap();
        id
    }

    async fn rendered_with(metrics: &Metrics, lines: &[&str]) -> String {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let text = metrics.render();
            if lines.iter().all(|l| text.contains(l)) {
                return text;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "not all of {lines:#?} in\n{text}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn finished_deploys_their_stages_reverts_and_last_success_are_heard_from_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let (config, store) = setup(dir.path()).await;
        let metrics = Metrics::new(&config);
        let task = metrics.follow(store.clone());

        let good = started(&store).await;
        store
            .succeed_deploy(good, "web", "a".repeat(40).parse().unwrap(), None)
            .await
            .unwrap();
        let bad = started(&store).await;
        store.fail_reverted(bad, "check failed").await.unwrap();

        let text = rendered_with(
            &metrics,
            &[
                "dockhand_deploys_total{app=\"web\",trigger=\"manual\",path=\"fast\",status=\"succeeded\"} 1",
                "dockhand_deploys_total{app=\"web\",trigger=\"manual\",path=\"fast\",status=\"failed\"} 1",
                "dockhand_deploy_reverts_total{app=\"web\"} 1",
                "dockhand_deploy_stage_duration_seconds_count{app=\"web\",stage=\"sync\"} 2",
                "dockhand_deploy_duration_seconds_count{app=\"web\",path=\"fast\"} 2",
                "dockhand_last_successful_deploy_timestamp_seconds{app=\"web\"} 1",
            ],
        )
        .await;
        assert!(
            !text.contains("aaaaaaa"),
            "a commit became a label:\n{text}"
        );

        // The queue depth is read at the scrape; the last success survives a restart.
        started(&store).await;
        store
            .queue_api_deploy(&NewApiDeploy {
                trigger: Trigger::Rollback,
                rollback_of: Some(good),
                ..NewApiDeploy::manual("web", &"b".repeat(40))
            })
            .await
            .unwrap();
        let restarted = Metrics::new(&config);
        restarted.refresh(&store).await.unwrap();
        restarted.load(&store).await.unwrap();
        let text = restarted.render();
        assert!(
            text.contains("dockhand_queue_depth{app=\"web\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("dockhand_last_successful_deploy_timestamp_seconds{app=\"web\"} 1"),
            "{text}"
        );
        task.abort();
    }

    #[tokio::test]
    async fn a_push_recorded_while_the_app_is_locked_counts_as_a_locked_deploy() {
        use crate::store::{DeliveryOutcome, NewDelivery, NewPushDeploy};
        let dir = tempfile::tempdir().unwrap();
        let (config, store) = setup(dir.path()).await;
        let metrics = Metrics::new(&config);
        let task = metrics.follow(store.clone());
        store
            .lock_app("web", "release freeze", "admin")
            .await
            .unwrap();
        let delivery = NewDelivery {
            delivery: "d1",
            hook_id: "",
            event: "push",
            repository: None,
            git_ref: Some("refs/heads/main"),
            after_sha: Some(&"c".repeat(40)),
            outcome: DeliveryOutcome::Deploy,
            reason: None,
        };
        let push = NewPushDeploy {
            app: "web",
            git_ref: "refs/heads/main",
            requested_sha: &"c".repeat(40),
            forced: false,
            actor: None,
        };
        let recorded = store.record_delivery(&delivery, &[push]).await.unwrap();
        assert_eq!(recorded.unwrap().locked.len(), 1);
        rendered_with(
            &metrics,
            &["dockhand_deploys_total{app=\"web\",trigger=\"push\",path=\"none\",status=\"locked\"} 1"],
        )
        .await;
        task.abort();
    }
}
