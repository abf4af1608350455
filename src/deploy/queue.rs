//! The per-app deploy workers: one per app, latest wins.
//!
//! Deploy ids (already persisted as `queued`) are sent to the app's worker (`crate::queue`). While a deploy runs,
//! new ones wait in the channel; when it ends the worker takes all that are waiting as one batch,
//! deploys the newest and marks the rest `superseded`. A storm of pushes therefore costs at most
//! one follow-up deploy, and the channel's bound turns an endless storm into 503s.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use super::{batch, recover};
use crate::git::Oid;
use crate::queue::Inboxes;
use crate::services::Services;

/// The running workers, to wait for on shutdown.
pub struct Workers {
    handles: Vec<JoinHandle<()>>,
    shutdown: CancellationToken,
}

impl Workers {
    /// Start one worker per app, each on its inbox.
    pub fn spawn(services: &Services, inboxes: Inboxes) -> Workers {
        let shutdown = CancellationToken::new();
        let handles = inboxes
            .into_inner()
            .into_iter()
            .map(|(app, rx)| tokio::spawn(worker(services.clone(), app, rx, shutdown.clone())))
            .collect();
        Workers { handles, shutdown }
    }

    /// Stop taking new deploys and wait up to `grace` for running ones to finish. A deploy still
    /// running after that is left `running` in the store; the next start marks it `interrupted`
    /// and restores the app's last good commit.
    pub async fn shutdown(self, grace: Duration) {
        self.shutdown.cancel();
        let all = futures_join(self.handles);
        if tokio::time::timeout(grace, all).await.is_err() {
            error!(
                ?grace,
                "a deploy was still running at shutdown; it will be recovered at next start"
            );
        }
    }
}

async fn futures_join(handles: Vec<JoinHandle<()>>) {
    for h in handles {
        let _ = h.await;
    }
}

async fn worker(ctx: Services, app: String, rx: mpsc::Receiver<i64>, shutdown: CancellationToken) {
    supervise(ctx, app, rx, shutdown, |ctx, app, batch| async move {
        batch::run_batch(&ctx, &app, batch).await
    })
    .await;
}

/// The worker's loop around `run_batch`: each batch runs in a task of its own, so that a panic
/// or an error recording its outcome ends that batch, never the worker — its deploys are
/// settled (undone, failed with what happened) and the next batch runs.
async fn supervise<R, F>(
    ctx: Services,
    app: String,
    mut rx: mpsc::Receiver<i64>,
    shutdown: CancellationToken,
    run_batch: R,
) where
    R: Fn(Services, String, Vec<i64>) -> F,
    F: std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
{
    loop {
        let first = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            id = rx.recv() => match id {
                Some(id) => id,
                None => break,
            },
        };
        let mut batch = vec![first];
        while let Ok(id) = rx.try_recv() {
            batch.push(id);
        }
        // In a task of its own, so that a panic ends this batch, not the worker.
        let ran = tokio::spawn(run_batch(ctx.clone(), app.clone(), batch.clone())).await;
        let failure = match ran {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(format!("{e:#}")),
            Err(join) => Some(panic_message(join)),
        };
        if let Some(failure) = failure {
            error!(
                app,
                error = failure,
                "deploy batch failed to record its outcome"
            );
            recover::settle(&ctx, &batch, &failure, &shutdown).await;
        }
        if rx.is_empty() && !shutdown.is_cancelled() {
            batch::maintain(&ctx, &app).await;
        }
    }
    info!(app, "deploy worker stopped");
}

/// What a panicked batch said, for its deploys' error.
fn panic_message(join: tokio::task::JoinError) -> String {
    if !join.is_panic() {
        return format!("the deploy task ended: {join}");
    }
    let payload = join.into_panic();
    let said = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".to_string());
    format!("dockhand panicked during this deploy: {said}")
}

/// One queued deploy competing in a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    /// The commit it would deploy, when it could be resolved.
    pub commit: Option<Oid>,
    /// A forced push: its tip wins whatever the ancestry says.
    pub forced: bool,
}

/// Which of a batch (in arrival order, non-empty) to deploy: the last arrival, unless it is not
/// forced and its commit is an ancestor of an earlier candidate's — an old delivery arriving
/// late never replaces a newer pending one. `is_ancestor(a, b)`: `a` is reachable from `b`.
pub fn pick_latest(batch: &[Candidate], is_ancestor: impl Fn(Oid, Oid) -> bool) -> usize {
    let Some(mut win) = batch.len().checked_sub(1) else {
        return 0;
    };
    if batch[win].forced {
        return win;
    }
    for i in (0..win).rev() {
        if let (Some(theirs), Some(ours)) = (batch[i].commit, batch[win].commit) {
            if theirs != ours && is_ancestor(ours, theirs) {
                win = i;
            }
        }
    }
    win
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    use crate::store::{DeployStatus, NewApiDeploy, Store};

    static RAN_ONE: AtomicBool = AtomicBool::new(false);

    /// Issue 12, defect 5: a panic in a deploy ended the app's worker, and its webhooks then
    /// answered 503 "shutting down" for ever. The deploy it was running is recorded failed with
    /// the panic's message, and the next one runs.
    #[tokio::test]
    async fn a_deploy_that_panics_is_recorded_failed_and_the_worker_runs_the_next_one() {
        let dir = tempfile::tempdir().unwrap();
        let (ctx, store) = one_app_services(dir.path()).await;
        let (tx, rx) = mpsc::channel(4);
        let (ran_tx, mut ran) = mpsc::unbounded_channel();
        let shutdown = CancellationToken::new();
        let worker = tokio::spawn(supervise(
            ctx,
            "web".into(),
            rx,
            shutdown.clone(),
            move |_, _, batch: Vec<i64>| {
                let ran_tx = ran_tx.clone();
                let first_batch = !RAN_ONE.swap(true, Ordering::SeqCst);
                async move {
                    let _ = ran_tx.send(batch.clone());
                    assert!(!first_batch, "boom in the first batch");
                    Ok(())
                }
            },
        ));

        let first = store
            .queue_api_deploy(&NewApiDeploy::manual("web", &"a".repeat(40)))
            .await
            .unwrap();
        tx.send(first).await.unwrap();
        assert_eq!(ran.recv().await, Some(vec![first]));
        let failed = tokio::time::timeout(Duration::from_secs(10), left_queued(&store, first))
            .await
            .expect("the deploy that panicked is still queued");
        assert_eq!(failed.status, DeployStatus::Failed);
        let error = failed.error.unwrap_or_default();
        assert!(
            error.contains("dockhand panicked during this deploy: boom in the first batch"),
            "{error}"
        );

        let second = store
            .queue_api_deploy(&NewApiDeploy::manual("web", &"b".repeat(40)))
            .await
            .unwrap();
        tx.send(second)
            .await
            .expect("the worker outlived the panic and takes deploys");
        let next = tokio::time::timeout(Duration::from_secs(10), ran.recv()).await;
        assert_eq!(
            next.ok().flatten(),
            Some(vec![second]),
            "the next deploy ran"
        );
        shutdown.cancel();
        worker.await.unwrap();
    }

    /// Services for one app `web` (state, store and volume under `dir`), and their store.
    async fn one_app_services(dir: &std::path::Path) -> (Services, Store) {
        let text = format!(
            "[server]\nstate_dir = \"{state}\"\n[[apps]]\nname = \"web\"\n\
             repo = \"https://github.com/Acme/Web.git\"\nsecret = \"s3cret\"\n\
             volume = \"{volume}\"\n",
            state = dir.join("state").display(),
            volume = dir.join("web").display(),
        );
        let config = std::sync::Arc::new(crate::config::Config::parse(&text, dir).unwrap().0);
        let store = Store::open(&dir.join("dockhand.db")).await.unwrap();
        let deployer = crate::queue::Deployer::for_test(&[], 1).0;
        let metrics = crate::metrics::Metrics::new(&config);
        let ctx = Services::new(
            config,
            store.clone(),
            crate::proxy::Proxies::default(),
            deployer,
            metrics,
        )
        .unwrap();
        (ctx, store)
    }

    /// Deploy `id` once its status is no longer `queued`.
    async fn left_queued(store: &Store, id: i64) -> crate::store::Deploy {
        loop {
            let d = store.deploy(id).await.unwrap().unwrap();
            if d.status != DeployStatus::Queued {
                return d;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn oid(n: u8) -> Oid {
        Oid::from_bytes(&[n; 20]).unwrap()
    }

    /// A linear history: lower numbers are ancestors of higher ones.
    fn linear(a: Oid, b: Oid) -> bool {
        a.as_bytes()[0] <= b.as_bytes()[0]
    }

    fn c(n: u8) -> Candidate {
        Candidate {
            commit: Some(oid(n)),
            forced: false,
        }
    }

    #[test]
    fn the_last_arrival_wins_when_it_is_newest() {
        assert_eq!(pick_latest(&[c(1), c(2), c(3)], linear), 2);
    }

    #[test]
    fn an_old_delivery_arriving_last_does_not_replace_a_newer_pending_one() {
        assert_eq!(pick_latest(&[c(1), c(5), c(3)], linear), 1);
    }

    #[test]
    fn a_forced_push_wins_even_if_older() {
        let forced = Candidate {
            commit: Some(oid(1)),
            forced: true,
        };
        assert_eq!(pick_latest(&[c(5), forced], linear), 1);
    }

    #[test]
    fn unrelated_histories_keep_arrival_order() {
        assert_eq!(pick_latest(&[c(1), c(2)], |_, _| false), 1);
    }

    #[test]
    fn unresolvable_candidates_do_not_block_the_pick() {
        let unknown = Candidate {
            commit: None,
            forced: false,
        };
        assert_eq!(pick_latest(&[c(3), unknown], linear), 1);
        assert_eq!(pick_latest(&[unknown, c(3)], linear), 1);
        assert_eq!(pick_latest(&[c(1)], linear), 0);
    }
}
