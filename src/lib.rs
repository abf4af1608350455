//! dockhand: a GitOps webhook server.
//!
//! GitHub push webhooks come in signed; dockhand verifies them, records every delivery and
//! deploy in SQLite, and deploys each push to a tracked ref — and, polling the origin, each push
//! whose webhook never came. The fast path writes only the changed files of the new commit into
//! the host directory a running container mounts, then reloads the app in place.
//!
//! # Layout
//! - [`api`]: the wire types of every JSON answer and event, shared by server and CLI.
//! - [`commit`]: [`commit::CommitId`], a full commit id parsed once, stored as text (a leaf).
//! - [`config`]: the TOML config, validated once; API tokens kept as digests.
//! - [`redact`]: secrets that never print and URLs without their credentials (a leaf).
//! - [`http`]: the axum router — webhook receivers, the read API, the token-authenticated
//!   operations API (deploy, rollback, plan, lock) and deploy events over SSE.
//! - [`github`]: signature verification and payload parsing.
//! - `github_api`: the REST client of `[github]` (deployments, statuses, installation tokens).
//! - [`deploy`]: the per-app queue (latest wins), the pure triage and planner, the fast and full
//!   paths, API targets resolved to full SHAs, rollback by recorded digest, recovery, and the
//!   polls that deploy a push whose webhook never arrived.
//! - [`git`]: the bare cache repository of each app (git2).
//! - [`tree`]: the app's code on the host: [`tree::volume`] (symlink-safe, atomic, O(changed)
//!   writes into the volume, cap-std) and [`tree::releases`] (`releases/<sha>/` + an
//!   atomically switched `current`).
//! - [`store`]: SQLite (sqlx), migrations embedded from `migrations/`.
//! - [`metrics`]: the Prometheus registry (`GET /metrics`, OpenMetrics text), fed by the
//!   store's deploy events, the proxies, the webhook receivers and the pollers.
//! - [`proxy`]: the built-in reverse proxy in front of an app (atomic upstream switch, drain).
//! - [`runtime`]: the engine boundary ([`runtime::Engine`]; Docker via bollard today) and the
//!   loopback HTTP health probe.
//! - [`services`]: `Services`, the one shared value (config, store, queue, proxies, engine,
//!   cache locks) that handlers, workers and pollers hold.
//! - [`startup`]: `App::build` / `port` / `run`; [`cli`] and [`telemetry`] for the binary.
//! - [`client`]: the CLI client commands (`deploy`, `history`, `logs --follow`, …) against a
//!   running server's API.

// No function over 80 lines (clippy.toml sets the threshold): a longer one is a stage to name.
#![warn(clippy::too_many_lines)]

pub mod api;
pub mod cli;
pub mod client;
pub mod commit;
pub mod config;
pub mod deploy;
pub mod git;
pub mod github;
pub(crate) mod github_api;
pub mod handover;
pub mod http;
mod listener;
pub mod metrics;
pub mod notify;
pub mod proxy;
pub mod queue;
pub mod redact;
pub mod runtime;
pub mod services;
pub mod startup;
pub mod store;
pub mod telemetry;
pub mod tree;
