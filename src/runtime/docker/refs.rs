//! Image and container references, checked before they go into an engine URL path
//! (`/images/{image}/json`), and split into the parts the engine's calls want.

use anyhow::bail;

/// Refuses references the engine (or a CLI behind it) could read as something else.
pub(super) fn check_image_ref(image: &str) -> anyhow::Result<()> {
    if image.is_empty() {
        bail!("image reference is empty");
    }
    if image.starts_with('-') {
        bail!("image reference {image:?} starts with '-'");
    }
    // The reference goes into URL paths (`/images/{image}/json`): nothing the engine's router
    // could read as another path or a query.
    if !image
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/' | ':' | '@'))
        || image.contains("..")
    {
        bail!("image reference {image:?} has characters or '..' no image reference has");
    }
    Ok(())
}

/// Container ids and names go into URL paths: only what Docker allows in either
/// (`[a-zA-Z0-9][a-zA-Z0-9_.-]*`, optionally with the leading `/` of an engine name).
pub(super) fn check_container_ref(id: &str) -> anyhow::Result<()> {
    let name = id.strip_prefix('/').unwrap_or(id);
    let mut chars = name.chars();
    let valid = chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if !valid {
        bail!("{id:?} is not a container id or name");
    }
    Ok(())
}

/// The repository part of a reference: without `@digest` and without `:tag`.
pub(super) fn repository(image: &str) -> &str {
    let name = image.split('@').next().unwrap_or(image);
    match name.rsplit_once(':') {
        // A colon after the last slash is a tag; before it, a registry port.
        Some((repo, tag)) if !tag.contains('/') => repo,
        _ => name,
    }
}

/// `(fromImage, tag)` for the create-image call. A digest goes whole in `fromImage`; a
/// reference without a tag gets `latest` (an empty tag would pull every tag).
pub(super) fn pull_parts(image: &str) -> (&str, Option<&str>) {
    if image.contains('@') {
        return (image, None);
    }
    let repo = repository(image);
    match image.get(repo.len() + 1..) {
        Some(tag) if !tag.is_empty() => (repo, Some(tag)),
        _ => (repo, Some("latest")),
    }
}

pub(super) fn repo_digest(image: &str, repo_digests: &[String]) -> Option<String> {
    let repo = repository(image);
    repo_digests
        .iter()
        .find(|d| d.split_once('@').is_some_and(|(r, _)| r == repo))
        .cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_split_into_repository_and_tag() {
        assert_eq!(
            repository("127.0.0.1:5000/a/app:v1"),
            "127.0.0.1:5000/a/app"
        );
        assert_eq!(repository("127.0.0.1:5000/a/app"), "127.0.0.1:5000/a/app");
        assert_eq!(repository("app@sha256:ab"), "app");
        assert_eq!(
            pull_parts("127.0.0.1:5000/a/app:v1"),
            ("127.0.0.1:5000/a/app", Some("v1"))
        );
        assert_eq!(
            pull_parts("127.0.0.1:5000/a/app"),
            ("127.0.0.1:5000/a/app", Some("latest"))
        );
        assert_eq!(pull_parts("app@sha256:ab"), ("app@sha256:ab", None));
    }

    #[test]
    fn repo_digest_matches_the_reference_repository() {
        let digests = vec![
            "other/app@sha256:1".to_string(),
            "r:5000/app@sha256:2".to_string(),
        ];
        assert_eq!(
            repo_digest("r:5000/app:v1", &digests).as_deref(),
            Some("r:5000/app@sha256:2")
        );
        assert_eq!(repo_digest("app:v1", &digests), None);
    }

    #[test]
    fn option_like_or_empty_references_are_refused() {
        assert!(check_image_ref("").is_err());
        assert!(check_image_ref("-v").is_err());
        assert!(check_image_ref("a b").is_err());
        assert!(check_image_ref("../../containers/x").is_err());
        assert!(check_image_ref("app?force=1").is_err());
        assert!(check_image_ref("app@sha256:0123abcd").is_ok());
        assert!(check_image_ref("127.0.0.1:5000/a/app:v1").is_ok());
    }

    #[test]
    fn container_refs_are_docker_names_or_ids() {
        for ok in ["a", "/dockhand-web-1", "0123abcdef", "web_2.blue"] {
            assert!(check_container_ref(ok).is_ok(), "{ok}");
        }
        for bad in ["", "/", "-x", "../images/x", "a/b", "a?b", "a b", ".a"] {
            assert!(check_container_ref(bad).is_err(), "{bad}");
        }
    }
}
