//! Fast or full: pure, no I/O, exhaustively unit-tested.
//!
//! The fast path puts new code into the running container's volume; the full path replaces the
//! container because its image must change. This module decides which one a deploy takes, from
//! what the app has, what changed, what the commit message asks for, and what runs now, and
//! always says why. The runner asks it for every deploy of an app with a container.

use std::path::Path;

use globset::GlobSet;

/// The commit-message trailer that overrides the decision: `Deploy-Path: full` or `fast`.
pub const TRAILER: &str = "Deploy-Path";

/// Which way a deploy goes (the store keeps it as a typed column).
pub use crate::store::DeployPath;

/// A decision and the reason a person reads in the deploy record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub path: DeployPath,
    pub reason: String,
}

/// What the running container is, as far as the planner cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Running {
    /// No container of this app exists.
    Nothing,
    /// A container runs this image reference.
    Image(String),
}

/// Everything the decision depends on.
#[derive(Debug, Clone)]
pub struct Inputs<'a> {
    /// The app has a container spec (without one, only the fast path exists).
    pub has_container: bool,
    /// The app has a code volume (without one, only the full path exists).
    pub has_volume: bool,
    /// Globs that force the full path, matched against every changed path (the app's
    /// `full_paths`, compiled by [`crate::config::compile_globs`]).
    pub full_paths: &'a GlobSet,
    /// Paths changed between the deployed commit and the target.
    pub changed: &'a [&'a Path],
    /// The target commit's message, for the `Deploy-Path` trailer.
    pub message: &'a str,
    /// The image reference the app's config names for this commit.
    pub wanted_image: Option<&'a str>,
    /// What runs now.
    pub running: &'a Running,
    /// An explicit request (API/CLI), which wins over everything the app allows.
    pub requested: Option<DeployPath>,
}

/// The `Deploy-Path` trailer of a commit message, if any (last one wins, case-insensitive).
pub fn trailer(message: &str) -> Option<Result<DeployPath, String>> {
    let trailers = git2::message_trailers_strs(message).ok()?;
    let value = trailers
        .iter()
        .rev()
        .find(|(k, _)| k.eq_ignore_ascii_case(TRAILER))?
        .1
        .trim();
    Some(match value.to_ascii_lowercase().as_str() {
        "full" => Ok(DeployPath::Full),
        "fast" => Ok(DeployPath::Fast),
        _ => Err(value.to_string()),
    })
}

/// Decide fast or full. Never fails: whatever the inputs, there is a decision and a reason.
pub fn decide(i: &Inputs<'_>) -> Decision {
    let d = |path, reason: String| Decision { path, reason };
    if !i.has_container {
        return d(
            DeployPath::Fast,
            "the app has no container spec: fast path only".into(),
        );
    }
    if !i.has_volume {
        return d(
            DeployPath::Full,
            "the app has no code volume: full path only".into(),
        );
    }
    if let Some(path) = i.requested {
        return d(path, format!("{} path requested explicitly", path.as_str()));
    }
    match i.running {
        Running::Nothing => {
            return d(
                DeployPath::Full,
                "no container of the app is running".into(),
            )
        }
        Running::Image(image) => {
            if let Some(wanted) = i.wanted_image.filter(|w| *w != image) {
                return d(
                    DeployPath::Full,
                    format!("the running container has image {image}, the config names {wanted}"),
                );
            }
        }
    }
    let bad_trailer = match trailer(i.message) {
        Some(Ok(path)) => return d(path, format!("commit trailer {TRAILER}: {}", path.as_str())),
        Some(Err(value)) => Some(value),
        None => None,
    };
    let hits: Vec<String> = i
        .changed
        .iter()
        .filter(|p| i.full_paths.is_match(p))
        .take(3)
        .map(|p| p.display().to_string())
        .collect();
    let mut decision = if hits.is_empty() {
        d(
            DeployPath::Fast,
            format!("{} changed paths, none needs a new image", i.changed.len()),
        )
    } else {
        d(
            DeployPath::Full,
            format!("{} changed: the image must be rebuilt", hits.join(", ")),
        )
    };
    if let Some(value) = bad_trailer {
        decision.reason.push_str(&format!(
            " (ignored {TRAILER}: {value:?}; use full or fast)"
        ));
    }
    decision
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{compile_globs, DEFAULT_FULL_PATHS};

    struct Case {
        has_container: bool,
        has_volume: bool,
        changed: Vec<&'static str>,
        message: &'static str,
        wanted: Option<&'static str>,
        running: Running,
        requested: Option<DeployPath>,
    }

    fn base() -> Case {
        Case {
            has_container: true,
            has_volume: true,
            changed: vec!["app/views.py"],
            message: "Fix the header\n",
            wanted: Some("registry/web:1"),
            running: Running::Image("registry/web:1".into()),
            requested: None,
        }
    }

    fn run(c: &Case) -> Decision {
        let globs = compile_globs(DEFAULT_FULL_PATHS).unwrap();
        let changed: Vec<&Path> = c.changed.iter().map(Path::new).collect();
        decide(&Inputs {
            has_container: c.has_container,
            has_volume: c.has_volume,
            full_paths: &globs,
            changed: &changed,
            message: c.message,
            wanted_image: c.wanted,
            running: &c.running,
            requested: c.requested,
        })
    }

    #[test]
    fn code_only_changes_take_the_fast_path() {
        let d = run(&base());
        assert_eq!(d.path, DeployPath::Fast);
        assert!(d.reason.contains("1 changed paths"), "{}", d.reason);
    }

    #[test]
    fn every_default_image_input_forces_the_full_path_at_any_depth() {
        for path in [
            "Containerfile",
            "Dockerfile",
            "Dockerfile.prod",
            ".dockerignore",
            "compose.yaml",
            "compose.override.yml",
            "requirements.txt",
            "requirements-dev.txt",
            "Pipfile.lock",
            "poetry.lock",
            "uv.lock",
            "frontend/package.json",
            "package-lock.json",
            "yarn.lock",
            "pnpm-lock.yaml",
            "Gemfile",
            "Gemfile.lock",
            "go.sum",
            "Cargo.lock",
            "composer.lock",
        ] {
            let mut c = base();
            c.changed = vec!["app/views.py", path];
            let d = run(&c);
            assert_eq!(d.path, DeployPath::Full, "{path}");
            assert!(d.reason.contains(path), "{}", d.reason);
        }
    }

    #[test]
    fn near_misses_stay_fast() {
        let mut c = base();
        // (`docs/Dockerfile.md` would match: the default `Dockerfile*` covers Dockerfile.prod.)
        c.changed = vec![
            "requirements/README",
            "src/package.jsonx",
            "Dockerfiles/README",
            "Gemfile.lock.orig",
        ];
        let d = run(&c);
        assert_eq!(d.path, DeployPath::Fast, "{}", d.reason);
    }

    #[test]
    fn trailer_full_forces_the_full_path_and_fast_overrides_the_globs() {
        let mut c = base();
        c.message = "Bump base image\n\nDeploy-Path: full\n";
        let d = run(&c);
        assert_eq!(d.path, DeployPath::Full);
        assert!(d.reason.contains("trailer"));

        let mut c = base();
        c.changed = vec!["package.json"];
        c.message = "Reorder scripts only\n\nSigned-off-by: A <a@b>\ndeploy-path: Fast\n";
        assert_eq!(run(&c).path, DeployPath::Fast);
    }

    #[test]
    fn a_trailer_in_the_body_text_is_not_a_trailer() {
        let mut c = base();
        c.message = "Explain\n\nDeploy-Path: full is what we use for images.\n\nMore text here.\n";
        assert_eq!(run(&c).path, DeployPath::Fast);
    }

    #[test]
    fn an_unknown_trailer_value_is_ignored_and_said() {
        let mut c = base();
        c.message = "Try\n\nDeploy-Path: sideways\n";
        let d = run(&c);
        assert_eq!(d.path, DeployPath::Fast);
        assert!(d.reason.contains("sideways"), "{}", d.reason);
    }

    #[test]
    fn missing_container_or_other_image_forces_the_full_path() {
        let mut c = base();
        c.running = Running::Nothing;
        assert_eq!(run(&c).path, DeployPath::Full);
        let mut c = base();
        c.running = Running::Image("registry/web:0".into());
        let d = run(&c);
        assert_eq!(d.path, DeployPath::Full);
        assert!(
            d.reason.contains("registry/web:0") && d.reason.contains("registry/web:1"),
            "{}",
            d.reason
        );
    }

    #[test]
    fn apps_without_a_container_are_always_fast_and_without_a_volume_always_full() {
        let mut c = base();
        c.has_container = false;
        c.changed = vec!["Dockerfile"];
        c.message = "x\n\nDeploy-Path: full\n";
        assert_eq!(run(&c).path, DeployPath::Fast);
        let mut c = base();
        c.has_volume = false;
        c.requested = Some(DeployPath::Fast);
        assert_eq!(run(&c).path, DeployPath::Full);
    }

    #[test]
    fn an_explicit_request_wins_over_trailer_globs_and_running_state() {
        let mut c = base();
        c.requested = Some(DeployPath::Fast);
        c.changed = vec!["Cargo.lock"];
        c.message = "x\n\nDeploy-Path: full\n";
        c.running = Running::Image("other".into());
        let d = run(&c);
        assert_eq!(d.path, DeployPath::Fast);
        assert!(d.reason.contains("requested"));
    }

    #[test]
    fn custom_globs_replace_the_defaults() {
        let globs = compile_globs(&["deps/**", "*.nix"]).unwrap();
        let changed = [Path::new("deps/lib/x.c"), Path::new("nix/shell.nix")];
        let running = Running::Image("i".into());
        let inputs = |changed: &[&Path]| {
            let changed: Vec<&Path> = changed.to_vec();
            decide(&Inputs {
                has_container: true,
                has_volume: true,
                full_paths: &globs,
                changed: &changed,
                message: "m\n",
                wanted_image: Some("i"),
                running: &running,
                requested: None,
            })
            .path
        };
        assert_eq!(inputs(&changed[..1]), DeployPath::Full);
        assert_eq!(inputs(&changed[1..]), DeployPath::Full);
        assert_eq!(inputs(&[Path::new("Dockerfile")]), DeployPath::Fast);
    }
}
