//! Recording a deploy's stages as rows while they run.

use std::future::Future;

use crate::store::{StepStage, Store};

/// The step log of one deploy.
pub(crate) struct Steps {
    store: Store,
    deploy_id: i64,
}

impl Steps {
    pub(crate) fn new(store: Store, deploy_id: i64) -> Steps {
        Steps { store, deploy_id }
    }

    /// Run one stage: a row opens before `work` starts and closes with its output, or with the
    /// error chain when it fails. The work's error is returned unchanged.
    pub(crate) async fn run<T>(
        &self,
        stage: StepStage,
        detail: &str,
        work: impl Future<Output = anyhow::Result<(T, String)>>,
    ) -> anyhow::Result<T> {
        let step = self.store.begin_step(self.deploy_id, stage, detail).await?;
        match work.await {
            Ok((value, output)) => {
                self.store.end_step(step, true, &output).await?;
                Ok(value)
            }
            Err(e) => {
                self.store.end_step(step, false, &format!("{e:#}")).await?;
                Err(e)
            }
        }
    }

    /// Open a stage's row now, to close with [`Steps::end`] when what it spans is over (a stage
    /// that is not one future, like a hold that spans the reload and the check).
    pub(crate) async fn begin(&self, stage: StepStage, detail: &str) -> anyhow::Result<i64> {
        self.store.begin_step(self.deploy_id, stage, detail).await
    }

    pub(crate) async fn end(&self, step: i64, output: &str) -> anyhow::Result<()> {
        self.store.end_step(step, true, output).await
    }
}
