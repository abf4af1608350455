//! The temp files a write renames into place: named `.dockhand-tmp-` and 16 lower-case hex
//! digits, created next to their target (never through a symlink, never over an existing file),
//! and the leftovers of a crashed `apply` removed again — only names of that exact shape, and
//! never a file a commit tracks.

use std::collections::BTreeSet;
use std::ffi::{OsStr, OsString};
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use anyhow::{bail, Context};
use cap_fs_ext::{FollowSymlinks, OpenOptionsFollowExt};
use cap_std::fs::{Dir, OpenOptions, OpenOptionsExt, Permissions, PermissionsExt};

use super::walk::{split_dir, Walk};
use super::Volume;
use crate::git::Change;

/// Prefix of the temp files `apply` writes next to their targets before renaming them in place.
pub const TEMP_PREFIX: &str = ".dockhand-tmp-";

impl Volume {
    /// Remove `.dockhand-tmp-*` files a crashed `apply` left, looking only in the directories the
    /// given changes touch. Returns how many were removed.
    pub fn remove_temp_files(
        &self,
        dirs_of: &[Change],
        tracked: impl Fn(&Path) -> bool,
    ) -> anyhow::Result<usize> {
        let parents: BTreeSet<&Path> = dirs_of
            .iter()
            .filter_map(|c| match c {
                Change::Write { path, .. } | Change::Delete { path } => path.parent(),
            })
            .collect();
        let mut removed = 0;
        for parent in parents {
            let components = split_dir(parent)?;
            let Some(stack) = self.walk(&components, parent, Walk::Existing)? else {
                continue;
            };
            let dir = stack.last().unwrap_or(&self.dir);
            let entries = dir
                .entries()
                .with_context(|| format!("listing {}", parent.display()))?;
            for entry in entries {
                let entry = entry.with_context(|| format!("listing {}", parent.display()))?;
                let name = entry.file_name();
                // Only the names `apply` makes, and never a file a commit tracks.
                if !is_temp_name(name.as_bytes()) || tracked(&parent.join(&name)) {
                    continue;
                }
                if entry.file_type().is_ok_and(|t| !t.is_dir()) {
                    match dir.remove_file(&name) {
                        Ok(()) => removed += 1,
                        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                        Err(e) => {
                            let path = parent.join(&name);
                            return Err(e).with_context(|| format!("removing {}", path.display()));
                        }
                    }
                }
            }
        }
        Ok(removed)
    }
}

/// A new temp file in `dir` with permissions `mode` (not masked by umask), its content written
/// by `fill` (which returns how many bytes it wrote). Returns the temp file's name and `fill`'s
/// count; on any error the temp file is removed again.
pub(super) fn write_temp_file(
    dir: &Dir,
    mode: u32,
    fill: impl FnOnce(&mut io::BufWriter<&mut cap_std::fs::File>) -> anyhow::Result<u64>,
) -> anyhow::Result<(OsString, u64)> {
    let mut file = None;
    let name = create_temp(|temp| {
        file = Some(create_new(dir, temp)?);
        Ok(())
    })
    .context("creating a temp file")?;
    let Some(file) = file else {
        bail!("temp file was not created");
    };
    let n = fill_new(dir, &name, file, mode, fill).context("writing the temp file")?;
    Ok((name, n))
}

/// Create file `name` in `dir` under its own name, as [`write_temp_file`] writes a temp file.
/// `Ok(None)` when something is there already (nothing is changed then).
pub(super) fn write_new_file(
    dir: &Dir,
    name: &OsStr,
    mode: u32,
    fill: impl FnOnce(&mut io::BufWriter<&mut cap_std::fs::File>) -> anyhow::Result<u64>,
) -> anyhow::Result<Option<u64>> {
    let file = match create_new(dir, name) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(None),
        Err(e) => return Err(e).context("creating the file"),
    };
    fill_new(dir, name, file, mode, fill).map(Some)
}

/// A file created at `name` in `dir`, which must not exist; never through a symlink.
fn create_new(dir: &Dir, name: &OsStr) -> io::Result<cap_std::fs::File> {
    let mut options = OpenOptions::new();
    options
        .write(true)
        .create_new(true)
        .mode(0o600)
        .follow(FollowSymlinks::No);
    dir.open_with(name, &options)
}

/// Fill the new `file` (at `name` in `dir`) and give it `mode`; removed again on any error.
fn fill_new(
    dir: &Dir,
    name: &OsStr,
    mut file: cap_std::fs::File,
    mode: u32,
    fill: impl FnOnce(&mut io::BufWriter<&mut cap_std::fs::File>) -> anyhow::Result<u64>,
) -> anyhow::Result<u64> {
    let written = (|| {
        let mut out = io::BufWriter::with_capacity(64 * 1024, &mut file);
        let n = fill(&mut out)?;
        out.flush()?;
        drop(out);
        file.set_permissions(Permissions::from_mode(mode))?;
        anyhow::Ok(n)
    })();
    if written.is_err() {
        drop(file);
        let _ = dir.remove_file(name);
    }
    written
}

/// Whether `name` is one `apply` gives its temp files: the prefix and 16 lower-case hex digits.
fn is_temp_name(name: &[u8]) -> bool {
    name.strip_prefix(TEMP_PREFIX.as_bytes())
        .is_some_and(|rest| {
            rest.len() == 16
                && rest
                    .iter()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
        })
}

/// Run `create` with fresh `.dockhand-tmp-<random>` names until one does not exist yet.
pub(super) fn create_temp(
    mut create: impl FnMut(&OsStr) -> io::Result<()>,
) -> io::Result<OsString> {
    loop {
        let name = OsString::from(format!("{TEMP_PREFIX}{:016x}", random()));
        match create(&name) {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            result => return result.map(|()| name),
        }
    }
}

/// A random number from the standard library's per-process randomly seeded hasher.
/// A random number for temp names.
pub(crate) fn random() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::path::{Path, PathBuf};

    use crate::git::tests::FILE;
    use crate::git::Change;
    use crate::tree::volume::tests::Fixture;

    #[test]
    fn leftover_temp_files_are_removed_only_where_the_changes_touch() {
        let (f, ids) = Fixture::new(&[&[("a/x", FILE, b"x"), ("b/y", FILE, b"y")]]);
        f.go(None, ids[0]).unwrap();
        fs::write(f.vol().join("a/.dockhand-tmp-0123456789abcdef"), "partial").unwrap();
        fs::write(f.vol().join("b/.dockhand-tmp-0123456789abcdef"), "partial").unwrap();
        let touching_a = [Change::Delete {
            path: PathBuf::from("a/x"),
        }];

        let removed = f.volume.remove_temp_files(&touching_a, |_| false).unwrap();

        assert_eq!(removed, 1);
        assert!(!f.vol().join("a/.dockhand-tmp-0123456789abcdef").exists());
        assert!(f.vol().join("b/.dockhand-tmp-0123456789abcdef").exists());
    }

    #[test]
    fn a_tracked_file_named_like_a_temp_file_is_never_removed_as_a_leftover() {
        let (f, ids) = Fixture::new(&[&[
            ("a/x", FILE, b"x"),
            ("a/.dockhand-tmp-notes", FILE, b"mine"),
            ("a/.dockhand-tmp-00000000deadbeef", FILE, b"mine too"),
        ]]);
        f.go(None, ids[0]).unwrap();
        fs::write(f.vol().join("a/.dockhand-tmp-0123456789abcdef"), "partial").unwrap();
        let touching_a = [Change::Delete {
            path: PathBuf::from("a/x"),
        }];
        let tracked = |p: &Path| p == Path::new("a/.dockhand-tmp-00000000deadbeef");

        let removed = f.volume.remove_temp_files(&touching_a, tracked).unwrap();

        assert_eq!(removed, 1);
        assert!(!f.vol().join("a/.dockhand-tmp-0123456789abcdef").exists());
        assert!(f.vol().join("a/.dockhand-tmp-notes").exists());
        assert!(f.vol().join("a/.dockhand-tmp-00000000deadbeef").exists());
    }
}
