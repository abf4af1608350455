//! The per-app queues of deploy ids: bounded channels whose sending side (`Deployer`) is
//! shared through `Services` (the webhook, the API and the pollers queue deploys with it) and
//! whose receiving side (`Inboxes`) goes to the deploy workers. Depends on nothing but the
//! config: the workers live in `deploy::queue`.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::mpsc;

use crate::config::Config;

/// Why a deploy could not be queued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueueError {
    #[error("deploy queue of app {0} is full; try again later")]
    Full(String),
    #[error("unknown app {0}")]
    UnknownApp(String),
    #[error("dockhand is shutting down")]
    Closed,
}

/// Sends deploys to the per-app workers. Cheap to clone.
#[derive(Clone)]
pub struct Deployer {
    senders: Arc<HashMap<String, mpsc::Sender<i64>>>,
}

/// Each app's end of its queue, until `deploy::Workers::spawn` hands it to the app's worker.
pub struct Inboxes(HashMap<String, mpsc::Receiver<i64>>);

impl Inboxes {
    /// Each app's receiving end, by app name.
    pub(crate) fn into_inner(self) -> HashMap<String, mpsc::Receiver<i64>> {
        self.0
    }
}

impl Deployer {
    /// One bounded queue per configured app (`queue_limit` waiting deploys): the sending ends
    /// and the receiving ones, which the workers take once the shared services exist.
    pub fn channels(config: &Config) -> (Deployer, Inboxes) {
        let names = config.apps.iter().map(|a| a.name.as_str());
        let (deployer, inboxes) = Deployer::bounded(names, config.server.queue_limit);
        (deployer, Inboxes(inboxes))
    }

    fn bounded<'a>(
        apps: impl Iterator<Item = &'a str>,
        bound: usize,
    ) -> (Deployer, HashMap<String, mpsc::Receiver<i64>>) {
        let mut senders = HashMap::new();
        let mut receivers = HashMap::new();
        for app in apps {
            let (tx, rx) = mpsc::channel(bound);
            senders.insert(app.to_string(), tx);
            receivers.insert(app.to_string(), rx);
        }
        let deployer = Deployer {
            senders: Arc::new(senders),
        };
        (deployer, receivers)
    }

    /// Reserve a place in an app's queue without waiting: full → [`QueueError::Full`]. Reserve
    /// before persisting, so a delivery is never acknowledged and then dropped. The permit is
    /// owned, so the persisting and the sending can run in a task of their own (see
    /// `http::to_the_end`).
    pub fn reserve(&self, app: &str) -> Result<mpsc::OwnedPermit<i64>, QueueError> {
        let tx = self
            .senders
            .get(app)
            .ok_or_else(|| QueueError::UnknownApp(app.to_string()))?;
        tx.clone().try_reserve_owned().map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => QueueError::Full(app.to_string()),
            mpsc::error::TrySendError::Closed(_) => QueueError::Closed,
        })
    }

    /// Queue a persisted deploy, waiting for room (startup resume).
    pub async fn enqueue(&self, app: &str, deploy_id: i64) -> Result<(), QueueError> {
        let tx = self
            .senders
            .get(app)
            .ok_or_else(|| QueueError::UnknownApp(app.to_string()))?;
        tx.send(deploy_id).await.map_err(|_| QueueError::Closed)
    }

    /// A deployer whose apps' deploys arrive on the returned receivers instead of at workers.
    #[cfg(test)]
    pub fn for_test(
        apps: &[&str],
        bound: usize,
    ) -> (Deployer, HashMap<String, mpsc::Receiver<i64>>) {
        Deployer::bounded(apps.iter().copied(), bound)
    }
}
