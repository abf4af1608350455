//! Deploy hooks: the operator's executables, run at fixed stages of a deploy.
//!
//! Hooks come only from `server.hooks_dir`: `<stage>` (every app, run first), then
//! `<app>/<stage>`. Nothing a deployed repository contains is ever run. A hook gets the deploy
//! only as environment variables on a cleared environment (its argv is its own path, and no
//! shell is involved), stdin from `/dev/null`, its own directory as cwd, and its own process
//! group, which is killed when it exits (leftover background processes) or runs out of time.
//! Each hook is a deploy step `hook:<stage>` (detail: the path) whose output is the tail of its
//! stdout and stderr, interleaved as written, and its exit status.
//!
//! The pure parts ([`env`], the output tail) are unit-tested; `tests/api/hooks.rs` runs real
//! hooks through real deploys.
//!
//! Layout: this file holds the stages, the environment, finding the hooks and running them as
//! steps; `process` runs one executable (process group, timeout, output tail) and knows nothing
//! of deploys or the store.

mod process;

use std::ffi::OsString;
use std::fmt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};
use tracing::warn;

use super::blocking;
use super::steps::Steps;
use crate::config::{AppConfig, Config};
use crate::services::Services;
use crate::store::{Deploy, StepStage, Trigger};
use crate::tree::Tree;
pub use process::{run, Outcome, Ran, OUTPUT_LIMIT};

/// The `PATH` every hook gets; nothing of dockhand's own environment is passed on but `HOME`.
pub const HOOK_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// Longest `DOCKHAND_MESSAGE` / `DOCKHAND_ERROR` value: Linux refuses to start a program with
/// an environment string over 128 KiB, and a hook needs no more.
const VALUE_LIMIT: usize = 16 * 1024;

/// When a hook runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// After the plan, before anything changes; a failure aborts the deploy.
    PreDeploy,
    /// After a push or manual deploy is live; a failure fails the deploy (the code stays live).
    PostDeploy,
    /// After a failed deploy was restored; its own failure changes nothing.
    OnFailure,
    /// `PostDeploy` for a rollback.
    PostRollback,
}

impl Stage {
    pub const ALL: [Stage; 4] = [
        Stage::PreDeploy,
        Stage::PostDeploy,
        Stage::OnFailure,
        Stage::PostRollback,
    ];

    /// The hook's file name.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::PreDeploy => "pre-deploy",
            Stage::PostDeploy => "post-deploy",
            Stage::OnFailure => "on-failure",
            Stage::PostRollback => "post-rollback",
        }
    }

    /// The stage that follows a successful deploy started by `trigger` (a deploy row's).
    pub fn after_deploy(trigger: Trigger) -> Stage {
        if trigger == Trigger::Rollback {
            Stage::PostRollback
        } else {
            Stage::PostDeploy
        }
    }

    /// The step that records this stage's hook running.
    fn step(self) -> StepStage {
        match self {
            Stage::PreDeploy => StepStage::HookPreDeploy,
            Stage::PostDeploy => StepStage::HookPostDeploy,
            Stage::OnFailure => StepStage::HookOnFailure,
            Stage::PostRollback => StepStage::HookPostRollback,
        }
    }

    /// `DOCKHAND_STATUS`: what the deploy's outcome is when the hook runs.
    fn status(self) -> Option<&'static str> {
        match self {
            Stage::PreDeploy => None,
            Stage::PostDeploy | Stage::PostRollback => Some("succeeded"),
            Stage::OnFailure => Some("failed"),
        }
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a hook is told about its deploy; every field becomes a `DOCKHAND_*` variable.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Vars {
    pub app: String,
    pub deploy_id: i64,
    /// The commit deployed before (`None`: a first deploy).
    pub from: Option<String>,
    /// The commit being deployed (`None`: the deploy failed before it was known).
    pub to: Option<String>,
    pub git_ref: Option<String>,
    /// `fast` or `full` (`None` before the plan).
    pub path: Option<String>,
    /// The directory the app runs from: the volume, or its `current` for the releases layout.
    pub tree: PathBuf,
    /// `push`, `manual` or `rollback`.
    pub trigger: String,
    /// The commit message of `to` (contributor text: data, never code).
    pub message: String,
    /// Why the deploy failed (on-failure only).
    pub error: Option<String>,
}

impl Vars {
    /// The variables for `deploy` of `app`, as its row records it.
    pub fn for_deploy(app: &AppConfig, deploy: &Deploy, message: String) -> Vars {
        Vars {
            app: app.name.clone(),
            deploy_id: deploy.id,
            from: deploy.from_commit.map(|c| c.to_string()),
            to: deploy.to_commit.map(|c| c.to_string()),
            git_ref: deploy.git_ref.clone(),
            path: deploy.path.map(|p| p.to_string()),
            tree: Tree::live_dir(app),
            trigger: deploy.trigger.to_string(),
            message,
            error: None,
        }
    }
}

/// The whole environment of a hook of `stage`: `PATH`, `HOME` when dockhand has one, and the
/// `DOCKHAND_*` variables (README "Deploy hooks" lists them). Nothing else is inherited.
pub fn env(stage: Stage, vars: &Vars, home: Option<OsString>) -> Vec<(String, OsString)> {
    let mut env: Vec<(String, OsString)> = vec![("PATH".into(), HOOK_PATH.into())];
    if let Some(home) = home {
        env.push(("HOME".into(), home));
    }
    let text = |s: &Option<String>| s.clone().unwrap_or_default().into();
    env.extend([
        ("DOCKHAND_STAGE".into(), stage.as_str().into()),
        ("DOCKHAND_APP".into(), vars.app.clone().into()),
        (
            "DOCKHAND_DEPLOY_ID".into(),
            vars.deploy_id.to_string().into(),
        ),
        ("DOCKHAND_FROM".into(), text(&vars.from)),
        ("DOCKHAND_TO".into(), text(&vars.to)),
        ("DOCKHAND_REF".into(), text(&vars.git_ref)),
        ("DOCKHAND_PATH".into(), text(&vars.path)),
        ("DOCKHAND_TREE".into(), vars.tree.clone().into_os_string()),
        ("DOCKHAND_TRIGGER".into(), vars.trigger.clone().into()),
        ("DOCKHAND_MESSAGE".into(), env_value(&vars.message).into()),
    ]);
    if let Some(status) = stage.status() {
        env.push(("DOCKHAND_STATUS".into(), status.into()));
    }
    if stage == Stage::OnFailure {
        let error = vars.error.as_deref().unwrap_or_default();
        env.push(("DOCKHAND_ERROR".into(), env_value(error).into()));
    }
    env
}

/// A value fit for the environment: no NUL (which cannot be passed), at most [`VALUE_LIMIT`]
/// bytes (cut at a character boundary).
fn env_value(s: &str) -> String {
    let mut s = s.replace('\0', "");
    if s.len() > VALUE_LIMIT {
        let mut cut = VALUE_LIMIT;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}

/// Where `stage`'s hooks for `app` may be, in the order they run.
pub fn candidates(hooks_dir: &Path, app: &str, stage: Stage) -> [PathBuf; 2] {
    [
        hooks_dir.join(stage.as_str()),
        hooks_dir.join(app).join(stage.as_str()),
    ]
}

/// What is at a hook path: `None` nothing; `Some(Ok)` a hook; `Some(Err)` something that is
/// there but cannot run — an error, never silently skipped.
fn probe(path: &Path) -> Option<Result<(), String>> {
    match std::fs::metadata(path) {
        Ok(meta) if !meta.is_file() => Some(Err("is not a regular file".to_string())),
        Ok(meta) if meta.permissions().mode() & 0o111 == 0 => Some(Err(
            "is not executable (chmod +x it, or remove it)".to_string(),
        )),
        Ok(_) => Some(Ok(())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // A dangling symlink is there, and broken.
            std::fs::symlink_metadata(path)
                .ok()
                .map(|_| Err("is a symlink to nothing".to_string()))
        }
        Err(e) => Some(Err(format!("cannot be read: {e}"))),
    }
}

/// The hooks present for `stage` of `app`, in run order, each with what `probe` found.
fn present(hooks_dir: &Path, app: &str, stage: Stage) -> Vec<(PathBuf, Result<(), String>)> {
    candidates(hooks_dir, app, stage)
        .into_iter()
        .filter_map(|p| probe(&p).map(|found| (p, found)))
        .collect()
}

/// Whether anything is at `stage`'s hook paths for `app` (a broken hook counts: it fails).
pub fn has_hooks(config: &Config, app: &str, stage: Stage) -> bool {
    config
        .server
        .hooks_dir
        .as_deref()
        .is_some_and(|dir| !present(dir, app, stage).is_empty())
}

/// The hooks a deploy of `app` started by `trigger` would run (pre-deploy, then post-deploy or
/// post-rollback), in order, each with its problem if it cannot run: what a dry run shows.
pub fn would_run(
    config: &Config,
    app: &str,
    trigger: Trigger,
) -> Vec<(Stage, PathBuf, Option<String>)> {
    let Some(dir) = config.server.hooks_dir.as_deref() else {
        return Vec::new();
    };
    [Stage::PreDeploy, Stage::after_deploy(trigger)]
        .into_iter()
        .flat_map(|stage| {
            present(dir, app, stage)
                .into_iter()
                .map(move |(path, found)| (stage, path, found.err()))
        })
        .collect()
}

/// Every hook, per app and stage, as `dockhand check` lists it: `(app, stage, path, problem)`.
pub fn inventory(config: &Config) -> Vec<(String, Stage, PathBuf, Option<String>)> {
    let Some(dir) = config.server.hooks_dir.as_deref() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for app in &config.apps {
        for stage in Stage::ALL {
            for (path, found) in present(dir, &app.name, stage) {
                out.push((app.name.clone(), stage, path, found.err()));
            }
        }
    }
    out
}

/// Hook files that exist but cannot run, one message each: `check` fails on them, `serve`
/// logs them at startup (the deploys that reach them fail at that stage).
pub fn problems(config: &Config) -> Vec<String> {
    let mut seen = std::collections::BTreeSet::new();
    inventory(config)
        .into_iter()
        .filter_map(|(_, _, path, problem)| Some((path, problem?)))
        .filter(|(path, _)| seen.insert(path.clone()))
        .map(|(path, problem)| format!("hook {} {problem}", path.display()))
        .collect()
}

/// Run `stage`'s hooks for deploy `deploy_id`, each as a step, in order. The first failure
/// (non-zero exit, timeout, cannot start, not executable) stops the stage and is returned,
/// naming the hook; the caller decides what it means for the deploy. The hook's output is in
/// its step, not in the error.
pub async fn run_stage(
    ctx: &Services,
    app: &str,
    deploy_id: i64,
    stage: Stage,
) -> anyhow::Result<()> {
    run_hooks(ctx, app, deploy_id, stage, None).await
}

/// Run the on-failure hooks of a failed deploy, every one even if an earlier one failed.
/// Their failures are steps and log lines; they change nothing else.
pub async fn on_failure(ctx: &Services, app: &str, deploy_id: i64, error: &str) {
    if let Err(e) = run_hooks(ctx, app, deploy_id, Stage::OnFailure, Some(error)).await {
        warn!(
            deploy_id,
            error = format!("{e:#}"),
            "on-failure hook failed"
        );
    }
}

async fn run_hooks(
    ctx: &Services,
    app: &str,
    deploy_id: i64,
    stage: Stage,
    error: Option<&str>,
) -> anyhow::Result<()> {
    let (Some(dir), Some(app)) = (ctx.config.server.hooks_dir.clone(), ctx.config.app(app)) else {
        return Ok(());
    };
    // Most stages of most deploys have no hook: look before reading anything else.
    let hooks = {
        let name = app.name.clone();
        blocking(move || Ok(present(&dir, &name, stage))).await?
    };
    if hooks.is_empty() {
        return Ok(());
    }
    let deploy = ctx
        .store
        .deploy(deploy_id)
        .await?
        .context("the deploy is not recorded")?;
    let message = match deploy.to_commit {
        Some(to) => {
            let to = to.into();
            ctx.with_cache(&app.name, move |cache| Ok(cache.commit_info(to)?.message))
                .await
                .unwrap_or_default()
        }
        None => String::new(),
    };
    let mut vars = Vars::for_deploy(app, &deploy, message);
    vars.error = error.map(str::to_string);
    let env = env(stage, &vars, std::env::var_os("HOME"));
    let timeout = app.hook_timeout.unwrap_or(ctx.config.server.hook_timeout);
    let steps = Steps::new(ctx.store.clone(), deploy_id);
    let mut failed = None;
    for (hook, found) in hooks {
        if let Err(e) = run_step(&steps, stage, &hook, found, &env, timeout).await {
            if stage != Stage::OnFailure {
                return Err(e);
            }
            failed.get_or_insert(e);
        }
    }
    failed.map_or(Ok(()), Err)
}

/// One hook as a step: its output (and exit status) on success; on failure the step holds
/// the reason and the output, and the returned error only names the hook and the reason.
async fn run_step(
    steps: &Steps,
    stage: Stage,
    hook: &Path,
    found: Result<(), String>,
    env: &[(String, OsString)],
    timeout: Duration,
) -> anyhow::Result<()> {
    let work = async {
        if let Err(problem) = found {
            bail!("{problem}");
        }
        let cwd = hook.parent().unwrap_or(Path::new("/"));
        let ran = run(hook, cwd, env, timeout)
            .await
            .context("could not be started")?;
        let output = if ran.output.is_empty() {
            "(no output)".to_string()
        } else {
            ran.output
        };
        match ran.outcome {
            Outcome::Exited(status) if status.success() => {
                Ok(((), format!("{output}\n[exited with status 0]")))
            }
            Outcome::Exited(status) => Err(anyhow!("output:\n{output}")
                .context(format!("exited with {}", describe_status(status)))),
            Outcome::TimedOut(after) => Err(anyhow!("output:\n{output}").context(format!(
                "timed out after {after:?} (its process group was killed)"
            ))),
        }
    };
    steps
        .run(stage.step(), &hook.display().to_string(), work)
        .await
        .map_err(|e| anyhow!("{stage} hook {} {e}", hook.display()))
}

fn describe_status(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("status {code}"),
        (None, Some(signal)) => format!("signal {signal}"),
        (None, None) => status.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> Vars {
        Vars {
            app: "web".into(),
            deploy_id: 7,
            from: None,
            to: Some("b".repeat(40)),
            git_ref: Some("refs/heads/main".into()),
            path: Some("fast".into()),
            tree: PathBuf::from("/srv/web/code"),
            trigger: "push".into(),
            message: "fix: $(touch /tmp/x) `id`; 'q' \"dq\"".into(),
            error: Some("sync failed".into()),
        }
    }

    fn names(env: &[(String, OsString)]) -> Vec<&str> {
        env.iter().map(|(k, _)| k.as_str()).collect()
    }

    fn get<'a>(env: &'a [(String, OsString)], key: &str) -> Option<&'a OsString> {
        env.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    #[test]
    fn pre_deploy_gets_path_home_and_the_deploy_but_no_status() {
        let env = env(Stage::PreDeploy, &vars(), Some("/root".into()));
        assert_eq!(
            names(&env),
            [
                "PATH",
                "HOME",
                "DOCKHAND_STAGE",
                "DOCKHAND_APP",
                "DOCKHAND_DEPLOY_ID",
                "DOCKHAND_FROM",
                "DOCKHAND_TO",
                "DOCKHAND_REF",
                "DOCKHAND_PATH",
                "DOCKHAND_TREE",
                "DOCKHAND_TRIGGER",
                "DOCKHAND_MESSAGE"
            ]
        );
        assert_eq!(get(&env, "PATH").unwrap(), HOOK_PATH);
        assert_eq!(get(&env, "DOCKHAND_FROM").unwrap(), "");
        assert_eq!(get(&env, "DOCKHAND_DEPLOY_ID").unwrap(), "7");
        assert_eq!(
            get(&env, "DOCKHAND_MESSAGE").unwrap(),
            "fix: $(touch /tmp/x) `id`; 'q' \"dq\""
        );
    }

    #[test]
    fn status_and_error_depend_on_the_stage() {
        let post = env(Stage::PostDeploy, &vars(), None);
        assert!(get(&post, "HOME").is_none());
        assert_eq!(get(&post, "DOCKHAND_STATUS").unwrap(), "succeeded");
        assert!(get(&post, "DOCKHAND_ERROR").is_none());
        let rollback = env(Stage::PostRollback, &vars(), None);
        assert_eq!(get(&rollback, "DOCKHAND_STATUS").unwrap(), "succeeded");
        let failed = env(Stage::OnFailure, &vars(), None);
        assert_eq!(get(&failed, "DOCKHAND_STATUS").unwrap(), "failed");
        assert_eq!(get(&failed, "DOCKHAND_ERROR").unwrap(), "sync failed");
        assert_eq!(get(&failed, "DOCKHAND_STAGE").unwrap(), "on-failure");
    }

    #[test]
    fn a_rollback_is_followed_by_post_rollback() {
        assert_eq!(Stage::after_deploy(Trigger::Rollback), Stage::PostRollback);
        assert_eq!(Stage::after_deploy(Trigger::Push), Stage::PostDeploy);
        assert_eq!(Stage::after_deploy(Trigger::Manual), Stage::PostDeploy);
    }

    #[test]
    fn env_values_lose_nul_bytes_and_are_capped_on_a_char_boundary() {
        assert_eq!(env_value("a\0b"), "ab");
        let long = "é".repeat(VALUE_LIMIT);
        let capped = env_value(&long);
        assert!(capped.len() <= VALUE_LIMIT && capped.len() >= VALUE_LIMIT - 1);
        assert!(capped.chars().all(|c| c == 'é'));
    }

    #[test]
    fn releases_hooks_see_current_as_the_tree() {
        let text = "[server]\nstate_dir = \"/var/lib/dockhand-test\"\n[[apps]]\nname = \"web\"\n\
                    repo = \"/srv/o.git\"\nsecret = \"s\"\nvolume = \"/tmp/dh-web\"\nlayout = \"releases\"\n";
        let (config, _) = Config::parse(text, Path::new("/tmp")).unwrap();
        let deploy = Deploy {
            id: 1,
            app: "web".into(),
            delivery_id: None,
            trigger: crate::store::Trigger::Push,
            actor: None,
            git_ref: None,
            requested_sha: None,
            forced: false,
            from_commit: None,
            to_commit: None,
            path: None,
            reason: None,
            status: crate::store::DeployStatus::Running,
            superseded_by: None,
            error: None,
            created_at: 0,
            started_at: None,
            finished_at: None,
            image: None,
            digest: None,
            requested_path: None,
            rollback_of: None,
            promoted_from: None,
            subject: None,
            reverted: false,
        };
        let vars = Vars::for_deploy(&config.apps[0], &deploy, String::new());
        assert_eq!(vars.tree, Path::new("/tmp/dh-web/current"));
    }
}
