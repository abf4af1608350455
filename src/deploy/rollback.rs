//! Rolling back on the full path: run the image digest recorded for the deploy rolled back to,
//! not whatever its tag names today (SECURITY.md 38), and pull only if it is no longer here
//! (`container::pull_if_missing`, the policy crash recovery uses too).

use super::container::pull_if_missing;
use super::full::FullDeploy;
use super::steps::Steps;
use crate::runtime::Engine;
use crate::store::StepStage;
use crate::store::Store;

/// Make the recorded `digest` (`repo@sha256:…`, recorded with `image`) available: used as it is
/// when the engine still has it, pulled by digest (immutable) otherwise. Recorded on the deploy;
/// returns the reference to run (the digest) and the digest.
pub(super) async fn reuse_image(
    docker: &dyn Engine,
    store: &Store,
    steps: &Steps,
    d: &FullDeploy<'_>,
    image: &str,
    digest: &str,
) -> anyhow::Result<(String, Option<String>)> {
    steps
        .run(StepStage::Pull, digest, async {
            let Some(pulled) = pull_if_missing(docker, d.container, digest).await? else {
                return Ok((
                    (),
                    format!("recorded image {digest} is present locally: not pulled"),
                ));
            };
            Ok((
                (),
                format!(
                    "recorded image {digest} was not present: pulled by digest (image {})",
                    pulled.image_id
                ),
            ))
        })
        .await?;
    store.record_image(d.deploy_id, image, Some(digest)).await?;
    Ok((digest.to_string(), Some(digest.to_string())))
}
