//! dockhand: a GitOps webhook server.
pub mod git;
pub mod github;
pub mod volume;
