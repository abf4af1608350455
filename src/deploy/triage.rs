//! Whether a push concerns an app: pure, no I/O, exhaustively unit-tested.

use crate::config::AppConfig;
use crate::github::events::Push;

use crate::github::events::ZERO_SHA;

/// What a push means for one app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Triage {
    /// Queue a deploy of this ref.
    Deploy,
    /// Record and do nothing, for this reason.
    Ignore(String),
}

/// Decide what `push` means for `app`. Branch creation needs nothing special: the diff is always
/// taken against what is deployed, never against the payload's `before`.
pub fn triage(app: &AppConfig, push: &Push) -> Triage {
    if !app.matches_repository(&push.repository) {
        return Triage::Ignore(format!(
            "repository {} is not app {}'s ({})",
            push.repository.full_name,
            app.name,
            app.repository_label()
        ));
    }
    if push.deleted || push.after == ZERO_SHA {
        return Triage::Ignore(format!("{} was deleted; nothing to deploy", push.git_ref));
    }
    if push.git_ref == app.branch_ref() {
        return Triage::Deploy;
    }
    if let (Some(tag), Some(pattern)) = (push.git_ref.strip_prefix("refs/tags/"), &app.tags) {
        if pattern.matches(tag) {
            return Triage::Deploy;
        }
    }
    Triage::Ignore(format!(
        "{} is not tracked by app {} ({})",
        push.git_ref,
        app.name,
        app.tracking_label()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::github::events::Repository;

    fn app(extra: &str) -> AppConfig {
        let text = format!(
            "[server]\nstate_dir = \"/var/lib/dh\"\n[[apps]]\nname = \"web\"\nrepo = \"https://github.com/acme/web.git\"\n\
             secret = \"x\"\nvolume = \"/tmp/dh-web\"\n{extra}"
        );
        Config::parse(&text, std::path::Path::new("/"))
            .unwrap()
            .0
            .apps
            .remove(0)
    }

    fn push(git_ref: &str) -> Push {
        Push {
            git_ref: git_ref.into(),
            before: "1".repeat(40),
            after: "2".repeat(40),
            created: false,
            deleted: false,
            forced: false,
            repository: Repository {
                full_name: "acme/web".into(),
                ..Default::default()
            },
            pusher: None,
            head_message: None,
        }
    }

    #[test]
    fn push_to_the_tracked_branch_deploys() {
        assert_eq!(triage(&app(""), &push("refs/heads/main")), Triage::Deploy);
    }

    #[test]
    fn push_to_another_branch_is_ignored_with_what_is_tracked() {
        let Triage::Ignore(reason) = triage(&app(""), &push("refs/heads/feature")) else {
            panic!()
        };
        assert!(
            reason.contains("refs/heads/feature") && reason.contains("branch main"),
            "{reason}"
        );
    }

    #[test]
    fn tag_push_deploys_only_when_the_pattern_matches() {
        let a = app("tags = \"v*\"\n");
        assert_eq!(triage(&a, &push("refs/tags/v1.2.0")), Triage::Deploy);
        assert!(matches!(
            triage(&a, &push("refs/tags/nightly")),
            Triage::Ignore(_)
        ));
        assert!(matches!(
            triage(&app(""), &push("refs/tags/v1")),
            Triage::Ignore(_)
        ));
    }

    #[test]
    fn a_branch_named_like_a_tag_is_not_a_tag() {
        let a = app("tags = \"v*\"\n");
        assert!(matches!(
            triage(&a, &push("refs/heads/v1")),
            Triage::Ignore(_)
        ));
    }

    #[test]
    fn branch_deletion_is_ignored() {
        let mut p = push("refs/heads/main");
        p.deleted = true;
        p.after = ZERO_SHA.into();
        let Triage::Ignore(reason) = triage(&app(""), &p) else {
            panic!()
        };
        assert!(reason.contains("deleted"));
        // A zero `after` alone means deletion too, whatever `deleted` says.
        let mut p = push("refs/heads/main");
        p.after = ZERO_SHA.into();
        assert!(matches!(triage(&app(""), &p), Triage::Ignore(_)));
    }

    #[test]
    fn branch_creation_deploys() {
        let mut p = push("refs/heads/main");
        p.created = true;
        p.before = ZERO_SHA.into();
        assert_eq!(triage(&app(""), &p), Triage::Deploy);
    }

    #[test]
    fn another_repository_is_ignored() {
        let mut p = push("refs/heads/main");
        p.repository.full_name = "acme/other".into();
        let Triage::Ignore(reason) = triage(&app(""), &p) else {
            panic!()
        };
        assert!(reason.contains("acme/other"));
    }
}
