//! Telling the app its code changed after a fast deploy: touch a file in the deployed tree
//! (uWSGI `touch-reload`), or — through the engine — send its container a signal (gunicorn
//! `HUP`, puma `USR1`/`USR2`), run a command inside it (`pm2 reload all`, exit code checked), or
//! restart it.

use std::sync::Arc;

use anyhow::bail;

use super::blocking;
use super::run::AppTree;
use crate::config::{AppConfig, Reload};
use crate::runtime::Engine;
use crate::services::Services;

/// How long a restart waits for the container to stop when the app has no `stop_grace`.
const RESTART_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// Reload `app` as configured; `live` is its live container (from `app_state`), if any.
/// Returns what was done, for the step output. Bounded by the app's `reload_timeout` (plus its
/// stop grace for a restart): a reload that never ends fails the deploy, never wedges the queue.
pub(super) async fn reload(
    ctx: &Services,
    app: &AppConfig,
    tree: &AppTree<'_>,
    live: Option<&str>,
) -> anyhow::Result<String> {
    let limit = match app.reload {
        Reload::Restart => {
            app.reload_timeout
                + app
                    .container
                    .as_ref()
                    .map_or(RESTART_GRACE, |c| c.stop_grace)
        }
        _ => app.reload_timeout,
    };
    match tokio::time::timeout(limit, reload_unbounded(ctx, app, tree, live)).await {
        Ok(done) => done,
        Err(_) => bail!(
            "the reload ({}) did not finish within {}s (reload_timeout); a command it started \
             may still run in the container",
            app.reload,
            limit.as_secs_f64()
        ),
    }
}

async fn reload_unbounded(
    ctx: &Services,
    app: &AppConfig,
    tree: &AppTree<'_>,
    live: Option<&str>,
) -> anyhow::Result<String> {
    match &app.reload {
        Reload::Touch(_) | Reload::None => in_tree(tree, &app.reload).await,
        Reload::Signal(signal) => {
            let (docker, container) = target(ctx, app, live).await?;
            docker.kill(&container, signal).await?;
            Ok(format!("sent {signal} to container {}", short(&container)))
        }
        Reload::Exec(argv) => {
            let (docker, container) = target(ctx, app, live).await?;
            let (code, output) = docker.exec(&container, argv).await?;
            let short = short(&container);
            if code != 0 {
                bail!("{argv:?} in container {short} exited with status {code}:\n{output}");
            }
            Ok(format!("{argv:?} in container {short} exited 0\n{output}"))
        }
        // The live container runs its own release, which nothing changes: a deploy swaps in a
        // new container instead (`deploy::run`), and recovery has nothing to tell it.
        Reload::Swap => {
            Ok("nothing to reload: the live container runs its own release".to_string())
        }
        Reload::Restart => {
            let (docker, container) = target(ctx, app, live).await?;
            let grace = app
                .container
                .as_ref()
                .map_or(RESTART_GRACE, |c| c.stop_grace);
            docker.restart(&container, grace).await?;
            Ok(format!("restarted container {}", short(&container)))
        }
    }
}

/// A reload in the tree itself: touch its reload file (with releases, the live release's), or
/// nothing configured.
pub(super) async fn in_tree(tree: &AppTree<'_>, reload: &Reload) -> anyhow::Result<String> {
    match reload {
        Reload::Touch(rel) => {
            let (tree, file) = (tree.get().await?, rel.clone());
            blocking(move || tree.touch(&file)).await?;
            Ok(format!("touched {}", rel.display()))
        }
        Reload::None => Ok("no reload configured".to_string()),
        // The engine does these (`reload_unbounded`).
        Reload::Signal(_) | Reload::Exec(_) | Reload::Restart | Reload::Swap => {
            bail!("{reload} is not a volume reload")
        }
    }
}

/// The engine and the container a signal/exec/restart reload acts on: `reload_container`, or
/// the app's live container.
async fn target(
    ctx: &Services,
    app: &AppConfig,
    live: Option<&str>,
) -> anyhow::Result<(Arc<dyn Engine>, String)> {
    let container = match (&app.reload_container, live) {
        (Some(name), _) => name.clone(),
        (None, Some(live)) => live.to_string(),
        (None, None) => {
            bail!("no live container to reload (nothing deployed by the full path yet)")
        }
    };
    Ok((ctx.engine().await?, container))
}

fn short(container: &str) -> &str {
    &container[..container.len().min(12)]
}
