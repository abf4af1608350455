//! dockhand's integration tests: one binary, real git repositories, a real SQLite file per test.

mod cli;
mod containerfile;
mod crash;
mod docker;
mod fast_path;
mod full_path;
mod handover;
mod hooks;
mod layering;
mod limits;
mod metrics;
mod monorepo;
mod notify;
mod ops;
mod ops_full;
mod poll;
mod promote;
mod proxy;
mod proxy_deploy;
mod queue;
mod releases;
mod reload;
mod support;
mod uwsgi;
mod webhook;
mod wire;
