//! The dashboard tests' dockhand: the operations tests' two apps and tokens (`admin`, `scoped`)
//! plus `viewer`, a read-only token for every app.

use crate::support::helpers::*;
use crate::support::ops::*;

pub const VIEWER: &str = "viewer-token-0123456789abcdef";

/// [`spawn_ops_edited`] with the `viewer` token added; `server_extra` goes in `[server]`.
/// Tokens are read once at startup, so the viewer's file is removed once dockhand runs (a
/// restart of this dockhand would not find it).
pub async fn spawn_dashboard(origin: &Origin, server_extra: &str) -> Ops {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), VIEWER).unwrap();
    let (_, path) = file.keep().unwrap();
    let viewer = format!(
        "\n[[tokens]]\nname = \"viewer\"\ntoken_file = \"{}\"\napps = [\"*\"]\nread_only = true\n",
        path.display()
    );
    let ops = spawn_ops_edited(origin, server_extra, "", |t| format!("{t}{viewer}")).await;
    std::fs::remove_file(&path).unwrap();
    ops
}
