//! Live deploy events: every step and status change the store commits is also published on one
//! in-process broadcast channel, after the commit. A reader subscribes first and then reads the
//! rows, so nothing falls between what it read and what it hears; it drops what it already saw
//! by step id (see `http::events`).

use tokio::sync::broadcast;

use super::{DeployStatus, StepStage, Store};

/// Events a slow subscriber may fall behind by before it is told it lagged (and re-reads rows).
const CAPACITY: usize = 1024;

/// Something that happened to a deploy, as committed to the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeployEvent {
    /// A step row opened.
    StepStarted {
        deploy_id: i64,
        step: i64,
        stage: StepStage,
        detail: Option<String>,
        at: i64,
    },
    /// A step row closed with its outcome and output.
    StepEnded {
        deploy_id: i64,
        step: i64,
        stage: StepStage,
        ok: bool,
        output: String,
        at: i64,
    },
    /// The deploy's status changed.
    Status {
        deploy_id: i64,
        status: DeployStatus,
        reason: Option<String>,
        error: Option<String>,
    },
}

impl DeployEvent {
    pub fn deploy_id(&self) -> i64 {
        match self {
            DeployEvent::StepStarted { deploy_id, .. }
            | DeployEvent::StepEnded { deploy_id, .. }
            | DeployEvent::Status { deploy_id, .. } => *deploy_id,
        }
    }
}

/// The sending side, shared by every clone of the store.
#[derive(Clone)]
pub(super) struct Events(broadcast::Sender<DeployEvent>);

impl Events {
    pub(super) fn new() -> Events {
        Events(broadcast::channel(CAPACITY).0)
    }
}

impl Store {
    /// Hear every deploy event committed from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<DeployEvent> {
        self.events.0.subscribe()
    }

    /// Publish an event that was just committed (no subscriber is fine).
    pub(super) fn publish(&self, event: DeployEvent) {
        let _ = self.events.0.send(event);
    }

    pub(super) fn publish_status(
        &self,
        deploy_id: i64,
        status: DeployStatus,
        reason: Option<&str>,
        error: Option<&str>,
    ) {
        self.publish(DeployEvent::Status {
            deploy_id,
            status,
            reason: reason.map(str::to_string),
            error: error.map(str::to_string),
        });
    }
}
