//! dockhand's integration tests: one binary, real git repositories, a real SQLite file per test.

mod fast_path;
mod helpers;
mod webhook;
