//! dockhand's integration tests: one binary, real git repositories, a real SQLite file per test.

mod helpers;
mod webhook;
