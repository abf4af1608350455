//! What an API call deploys, resolved to a full commit id before anything is queued, and the
//! dry run (`plan`), which changes nothing: no row, no volume write (it may fetch into the cache).
//!
//! git work runs here, on the blocking pool, with the app's cache held against concurrent
//! fetches; http only sees [`Target`] and [`TargetError`].

use super::decide::{decide, Ask, Live};
use super::fast;
use super::plan::DeployPath;
use crate::commit::CommitId;
use crate::config::AppConfig;
use crate::git::{Cache, Change, MissingRef};
use crate::services::Services;
use crate::store::Trigger;

/// Most changed paths a dry run lists (the count is always complete).
pub const MAX_LISTED_CHANGES: usize = 200;

/// A resolved deploy target.
#[derive(Debug, Clone)]
pub struct Target {
    pub sha: CommitId,
    /// The full ref it came from, if it came from one.
    pub git_ref: Option<String>,
    /// For a rollback: the succeeded deploy of this commit it repeats (its recorded image).
    pub rollback_of: Option<i64>,
    /// For a promote: the succeeded deploy of another app whose commit and image it runs.
    pub promoted_from: Option<i64>,
    /// How it was found, for the record and the answer.
    pub how: String,
}

/// Why a target could not be resolved. `field` names the request field.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// Malformed or option-like: 400.
    #[error("{field}: {message}")]
    Bad {
        field: &'static str,
        message: String,
    },
    /// Names nothing: 404.
    #[error("{0}")]
    NotFound(String),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

/// What a rollback goes back to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RollbackTo {
    /// The newest succeeded deploy before the current one with another commit.
    Previous,
    /// A deploy id.
    Deploy(i64),
    /// A commit id (7 to 40 hex digits) or a tag name.
    Spec(String),
}

/// Check a branch / tag / commit spec from a request: no option-like or malformed names.
pub fn check_spec(field: &'static str, spec: &str) -> Result<(), TargetError> {
    let bad = |message: String| Err(TargetError::Bad { field, message });
    if spec.is_empty() {
        return bad("must not be empty".into());
    }
    if spec.starts_with('-') {
        return bad(format!("{spec:?} starts with '-'"));
    }
    let full = if spec.starts_with("refs/") {
        spec.to_string()
    } else {
        format!("refs/heads/{spec}")
    };
    if spec.len() > 255 || !crate::git::valid_ref_name(&full) {
        return bad(format!("{spec:?} is not a branch, tag or commit id"));
    }
    Ok(())
}

fn is_commit_id(spec: &str) -> bool {
    (7..=40).contains(&spec.len()) && spec.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Resolve what `POST /deploy` or `/plan` asks for: the tracked branch's tip (`None`), a commit
/// id, a full ref, or a branch or tag name (branch first). Fetches first.
pub async fn resolve_ref(
    ctx: &Services,
    app: &AppConfig,
    field: &'static str,
    spec: Option<&str>,
) -> Result<Target, TargetError> {
    if let Some(spec) = spec {
        check_spec(field, spec)?;
    }
    let app2 = ctx.fetching(app).await.map_err(TargetError::Other)?;
    let spec = spec.map(str::to_string);
    ctx.with_cache(&app.name, move |cache| {
        Ok(resolve_ref_blocking(cache, &app2, field, spec.as_deref()))
    })
    .await
    .map_err(TargetError::Other)?
}

fn resolve_ref_blocking(
    cache: &Cache,
    app: &AppConfig,
    field: &'static str,
    spec: Option<&str>,
) -> Result<Target, TargetError> {
    let fetch = |r: &str| cache.fetch(&app.repo, &[r.to_string()], &app.access, &app.fetch_limits);
    let at_ref = |r: String, how: String| -> Result<Target, TargetError> {
        let sha = cache
            .resolve(&r)?
            .ok_or_else(|| TargetError::NotFound(format!("{r} names no commit")))?;
        Ok(Target {
            sha: sha.into(),
            git_ref: Some(r),
            rollback_of: None,
            promoted_from: None,
            how,
        })
    };
    let Some(spec) = spec else {
        let r = app.branch_ref();
        fetch(&r)?;
        return at_ref(r, format!("tip of branch {}", app.branch));
    };
    if is_commit_id(spec) {
        // Commits the cache has need no fetch; others may be on the tracked branch. An
        // ambiguous prefix, or an id of something that is not a commit, is the caller's error.
        let bad = |e: anyhow::Error| TargetError::Bad {
            field,
            message: format!("{e:#}"),
        };
        let mut found = cache.resolve(spec).map_err(bad)?;
        if found.is_none() {
            fetch(&app.branch_ref())?;
            found = cache.resolve(spec).map_err(bad)?;
        }
        if let Some(sha) = found {
            return Ok(Target {
                sha: sha.into(),
                git_ref: None,
                rollback_of: None,
                promoted_from: None,
                how: format!("commit {spec}"),
            });
        }
    }
    let candidates = if spec.starts_with("refs/") {
        vec![spec.to_string()]
    } else {
        vec![format!("refs/heads/{spec}"), format!("refs/tags/{spec}")]
    };
    for r in candidates {
        match fetch(&r) {
            Ok(()) => return at_ref(r.clone(), r),
            Err(e) if e.downcast_ref::<MissingRef>().is_some() => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(TargetError::NotFound(format!(
        "{spec:?} is not a branch, tag or commit of app {}",
        app.name
    )))
}

/// Resolve what `POST /rollback` asks for. A tag that a succeeded deploy ran resolves to the
/// commit that deploy recorded, even if the tag has moved since (SECURITY.md 38).
pub async fn resolve_rollback(
    ctx: &Services,
    app: &AppConfig,
    to: &RollbackTo,
) -> Result<Target, TargetError> {
    let target = match to {
        RollbackTo::Previous => previous_succeeded(ctx, app).await?,
        RollbackTo::Deploy(id) => succeeded_deploy(ctx, app, *id).await?,
        RollbackTo::Spec(spec) => rollback_spec(ctx, app, spec).await?,
    };
    // The commit must be in the cache: the rollback itself fetches nothing.
    if !in_cache(ctx, app, target.sha).await? {
        return Err(TargetError::NotFound(format!(
            "commit {} is not in the cache of app {}",
            target.sha, app.name
        )));
    }
    Ok(target)
}

/// A rollback that runs deploy `d` again, resolved as `how` says.
fn from_deploy(d: crate::store::Deploy, how: String) -> Result<Target, TargetError> {
    let sha = d
        .to_commit
        .ok_or_else(|| TargetError::NotFound(format!("deploy {} recorded no commit", d.id)))?;
    Ok(Target {
        sha,
        git_ref: d.git_ref,
        rollback_of: Some(d.id),
        promoted_from: None,
        how,
    })
}

/// The default: the newest succeeded deploy of another commit before the one live now.
async fn previous_succeeded(ctx: &Services, app: &AppConfig) -> Result<Target, TargetError> {
    let store = &ctx.store;
    let state = store
        .app_state(&app.name)
        .await?
        .ok_or_else(|| TargetError::NotFound(format!("app {} was never deployed", app.name)))?;
    let d = store
        .succeeded_before(&app.name, state.deploy_id, state.commit_sha)
        .await?
        .ok_or_else(|| {
            TargetError::NotFound(format!(
                "app {} has no succeeded deploy of another commit before deploy {}",
                app.name, state.deploy_id
            ))
        })?;
    let how = format!("the previous succeeded deploy, {}", d.id);
    from_deploy(d, how)
}

/// `to` a deploy id: that deploy of this app, which must have succeeded.
async fn succeeded_deploy(ctx: &Services, app: &AppConfig, id: i64) -> Result<Target, TargetError> {
    let d = ctx
        .store
        .deploy(id)
        .await?
        .filter(|d| d.app == app.name)
        .ok_or_else(|| TargetError::NotFound(format!("app {} has no deploy {id}", app.name)))?;
    if d.status != crate::store::DeployStatus::Succeeded {
        return Err(TargetError::Bad {
            field: "to",
            message: format!(
                "deploy {id} is {}; roll back to a deploy that succeeded",
                d.status
            ),
        });
    }
    from_deploy(d, format!("deploy {id}"))
}

/// `to` a commit id or tag: a tag as the deploy that ran it recorded it (its commit then,
/// whatever the tag names now), else the commit or tag resolved now.
async fn rollback_spec(ctx: &Services, app: &AppConfig, spec: &str) -> Result<Target, TargetError> {
    check_spec("to", spec)?;
    let store = &ctx.store;
    let tag = spec.strip_prefix("refs/tags/").unwrap_or(spec);
    let recorded = if is_commit_id(spec) {
        None
    } else {
        store
            .succeeded_with_ref(&app.name, &format!("refs/tags/{tag}"))
            .await?
    };
    if let Some(d) = recorded {
        let how = format!("tag {tag} as deploy {} ran it", d.id);
        return from_deploy(d, how);
    }
    let mut t = resolve_commit_or_tag(ctx, app, spec, tag).await?;
    t.rollback_of = store
        .succeeded_with_commit(&app.name, t.sha)
        .await?
        .map(|d| d.id);
    Ok(t)
}

/// Resolve what `POST /promote` asks for: deploy `from` of another app of the same repository,
/// which succeeded. Its commit must be in this app's cache, or fetched into it from this app's
/// origin with the ref that deploy ran (the worker fetches nothing for a promote).
pub async fn resolve_promote(
    ctx: &Services,
    app: &AppConfig,
    from: i64,
) -> Result<Target, TargetError> {
    let bad = |message: String| TargetError::Bad {
        field: "from_deploy",
        message,
    };
    if from <= 0 {
        return Err(bad(format!(
            "{from} is not a deploy id (a positive integer)"
        )));
    }
    let d = ctx
        .store
        .deploy(from)
        .await?
        .ok_or_else(|| TargetError::NotFound(format!("no deploy {from}")))?;
    if d.app == app.name {
        return Err(bad(format!(
            "deploy {from} is of app {} itself; promote runs a deploy of another app (to run one of its own again, roll back to it)",
            app.name
        )));
    }
    if d.status != crate::store::DeployStatus::Succeeded {
        return Err(bad(format!(
            "deploy {from} is {}; promote a deploy that succeeded",
            d.status
        )));
    }
    let source = ctx.config.app(&d.app).ok_or_else(|| {
        bad(format!(
            "deploy {from} is of app {}, which is no longer configured",
            d.app
        ))
    })?;
    if !app.same_repository(source) {
        return Err(bad(format!(
            "app {} tracks {} but deploy {from} is of app {}, which tracks {}: promote only between apps of one repository",
            app.name,
            crate::redact::redact_url(&app.repo),
            source.name,
            crate::redact::redact_url(&source.repo)
        )));
    }
    let sha = d
        .to_commit
        .ok_or_else(|| TargetError::NotFound(format!("deploy {from} recorded no commit")))?;
    if !in_cache(ctx, app, sha).await? {
        if let Some(r) = d.git_ref.as_deref() {
            resolve_ref(ctx, app, "from_deploy", Some(r)).await?;
        }
        if !in_cache(ctx, app, sha).await? {
            return Err(TargetError::NotFound(format!(
                "commit {sha} of deploy {from} is not at app {}'s origin under {} any more",
                app.name,
                d.git_ref.as_deref().unwrap_or("its ref")
            )));
        }
    }
    Ok(Target {
        sha,
        git_ref: d.git_ref,
        rollback_of: None,
        promoted_from: Some(from),
        how: format!("deploy {from} of app {}", d.app),
    })
}

/// Whether `app`'s cache holds commit `sha`.
async fn in_cache(ctx: &Services, app: &AppConfig, sha: CommitId) -> anyhow::Result<bool> {
    let spec = sha.to_string();
    ctx.with_cache(&app.name, move |cache| Ok(cache.resolve(&spec)?.is_some()))
        .await
}

/// A commit id (cache first, then the tracked branch) or a tag at the origin.
async fn resolve_commit_or_tag(
    ctx: &Services,
    app: &AppConfig,
    spec: &str,
    tag: &str,
) -> Result<Target, TargetError> {
    if is_commit_id(spec) {
        let t = resolve_ref(ctx, app, "to", Some(spec)).await?;
        if t.git_ref.is_none() {
            return Ok(t);
        }
    }
    match resolve_ref(ctx, app, "to", Some(&format!("refs/tags/{tag}"))).await {
        Err(TargetError::NotFound(_)) => Err(TargetError::NotFound(format!(
            "{spec:?} is neither a commit nor a tag of app {}",
            app.name
        ))),
        other => other,
    }
}

/// The answer of a dry run.
#[derive(Debug, Clone)]
pub struct DryRun {
    pub deployed: Option<String>,
    pub path: DeployPath,
    pub reason: String,
    /// Changed paths, at most [`MAX_LISTED_CHANGES`].
    pub changes: Vec<(&'static str, String)>,
    pub changed: usize,
    /// With `paths`: how many changed paths fall under them (none: a push would be ignored).
    pub paths_matching: Option<usize>,
    /// The hooks a manual deploy would run, in order, each with its problem if it cannot run.
    pub hooks: Vec<(super::hooks::Stage, std::path::PathBuf, Option<String>)>,
}

/// What deploying `target` would do now: the diff against the deployed commit and the
/// planner's decision. Reads the store, the cache and (for apps with a container) inspects the
/// live container; writes nothing.
pub async fn dry_run(ctx: &Services, app: &AppConfig, target: &Target) -> anyhow::Result<DryRun> {
    let (live, from) = Live::of(ctx.store.app_state(&app.name).await?);
    let to = target.sha.into();
    let (config, name) = (ctx.config.clone(), app.name.clone());
    let (plan, hooks) = ctx
        .with_cache(&app.name, move |cache| {
            let plan = fast::diff(cache, from, to)?;
            Ok((
                plan,
                super::hooks::would_run(&config, &name, Trigger::Manual),
            ))
        })
        .await?;
    let ask = Ask {
        git_ref: target.git_ref.as_deref().unwrap_or_default(),
        requested: None,
        recorded_digest: None,
    };
    let (decision, _) = decide(ctx, app, &ask, &plan, to, &live).await?;
    let changes = plan
        .changes
        .iter()
        .take(MAX_LISTED_CHANGES)
        .map(|c| match c {
            Change::Write { path, .. } => ("write", path.display().to_string()),
            Change::Delete { path } => ("delete", path.display().to_string()),
        })
        .collect();
    let paths_matching =
        (app.paths.as_ref()).map(|p| p.matching(plan.changes.iter().map(Change::path)));
    Ok(DryRun {
        deployed: from.map(|c| c.to_string()),
        path: decision.path,
        reason: decision.reason,
        changes,
        changed: plan.changes.len(),
        paths_matching,
        hooks,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the `refs_paths` fuzz target: git2's name check panicked on a NUL, so an API
    /// call with `{"ref": "main\u0000"}` got no answer at all instead of a 400.
    #[test]
    fn a_spec_holding_a_nul_is_a_bad_request_not_a_panic() {
        for spec in ["main\0", "refs/\0\0\0\0\0v1.2", "\0"] {
            assert!(
                matches!(check_spec("ref", spec), Err(TargetError::Bad { .. })),
                "{spec:?}"
            );
        }
        assert!(check_spec("ref", "main").is_ok());
    }
}
