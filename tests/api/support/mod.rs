//! Everything the feature files share: helpers (origins, an in-process dockhand, signing),
//! the engine, a dockhand process, the operations API setup, the full path's setup, a load
//! generator, the uWSGI app. Feature files import only from here, never from each other.

pub mod dashboard;
pub mod engine;
pub mod full;
pub mod git_servers;
pub mod github;
pub mod helpers;
pub mod load;
pub mod ops;
pub mod prometheus;
pub mod server;
pub mod uwsgi;
