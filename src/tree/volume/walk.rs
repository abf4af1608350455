//! The one way to any path in a volume: each parent directory opened in turn, never through a
//! symlink (`open_dir_nofollow`, whatever an earlier look saw), and no path component that is
//! not a plain name. What happens to a missing or wrong entry on the way is the caller's `Walk`.

use std::ffi::OsStr;
use std::io;
use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Context};
use cap_fs_ext::DirExt;
use cap_std::fs::{Dir, DirBuilder, DirBuilderExt};

use super::Volume;

impl Volume {
    /// Open each directory of `components` in turn, never following a symlink. Returns the opened
    /// directories (`stack[i]` is `components[..=i]`), or `None` (with `Walk::Existing`) when one
    /// is missing or not a directory.
    pub(super) fn walk(
        &self,
        components: &[&OsStr],
        rel: &Path,
        how: Walk,
    ) -> anyhow::Result<Option<Vec<Dir>>> {
        self.walk_on(Vec::with_capacity(components.len()), components, rel, how)
    }

    /// [`Volume::walk`] on from `stack`, the directories of `components[..stack.len()]` that an
    /// earlier walk of this apply opened.
    pub(super) fn walk_on(
        &self,
        mut stack: Vec<Dir>,
        components: &[&OsStr],
        rel: &Path,
        how: Walk,
    ) -> anyhow::Result<Option<Vec<Dir>>> {
        debug_assert!(stack.len() <= components.len());
        for (i, &component) in components.iter().enumerate().skip(stack.len()) {
            let here = || components[..=i].iter().collect::<PathBuf>();
            let cur = stack.last().unwrap_or(&self.dir);
            match cur.symlink_metadata(component) {
                Ok(meta) if meta.is_dir() => {}
                Ok(meta) if meta.is_symlink() => {
                    if how == Walk::Existing {
                        return Ok(None);
                    }
                    bail!(
                        "refusing to write through symlink {} (to reach {})",
                        here().display(),
                        rel.display()
                    );
                }
                Ok(_) => match how {
                    Walk::Existing => return Ok(None),
                    Walk::Touch => bail!(
                        "{} is not a directory (to reach {})",
                        here().display(),
                        rel.display()
                    ),
                    Walk::Write => {
                        // Not in the target tree, which has a directory here.
                        cur.remove_file(component).with_context(|| {
                            format!("removing file {} in the way", here().display())
                        })?;
                        create_dir(cur, component)
                            .with_context(|| format!("creating {}", here().display()))?;
                    }
                },
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    if how == Walk::Existing {
                        return Ok(None);
                    }
                    create_dir(cur, component)
                        .with_context(|| format!("creating {}", here().display()))?;
                }
                Err(e) => {
                    return Err(e).with_context(|| format!("inspecting {}", here().display()))
                }
            }
            // The check above is advisory; this open is what guarantees no symlink is followed,
            // even if the container swaps one in meanwhile.
            let next = match cur.open_dir_nofollow(component) {
                Ok(next) => next,
                Err(e) => {
                    let symlink = is_symlink(cur, component);
                    let gone = symlink
                        || matches!(
                            e.kind(),
                            io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
                        );
                    if how == Walk::Existing && gone {
                        return Ok(None);
                    }
                    if symlink {
                        bail!(
                            "refusing to write through symlink {} (to reach {})",
                            here().display(),
                            rel.display()
                        );
                    }
                    return Err(e)
                        .with_context(|| format!("opening directory {}", here().display()));
                }
            };
            stack.push(next);
        }
        Ok(Some(stack))
    }
}

/// The directories the last write of an apply went through, open, for the next write: changes
/// come sorted by path, so most writes share their parent directories with the one before, and
/// a first deploy of 2,000 files would otherwise open each parent again for every file (a
/// `statx` and an `openat2` per level). Only directories this apply opened are reused.
#[derive(Default)]
pub(super) struct Opened {
    names: Vec<std::ffi::OsString>,
    dirs: Vec<Dir>,
}

impl Opened {
    /// The open directories of the longest common prefix of `components` and the last walk.
    pub(super) fn take_prefix(&mut self, components: &[&OsStr]) -> Vec<Dir> {
        let common = self
            .names
            .iter()
            .zip(components)
            .take_while(|(kept, wanted)| kept.as_os_str() == **wanted)
            .count();
        self.names.clear();
        self.dirs.truncate(common);
        std::mem::take(&mut self.dirs)
    }

    /// Keep `dirs`, the open directories of `components`, for the next write.
    pub(super) fn keep(&mut self, components: &[&OsStr], dirs: Vec<Dir>) {
        self.names = components.iter().map(|c| c.to_os_string()).collect();
        self.dirs = dirs;
    }
}

/// How `Volume::walk` treats what it finds on the way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Walk {
    /// Only open what exists; anything else means the path is absent.
    Existing,
    /// Create missing directories and replace files in the way.
    Write,
    /// Create missing directories; anything else in the way is an error.
    Touch,
}

/// The parent components and the file name of a relative change path.
pub(super) fn split(path: &Path) -> anyhow::Result<(Vec<&OsStr>, &OsStr)> {
    let mut components = split_dir(path)?;
    match components.pop() {
        Some(name) => Ok((components, name)),
        None => bail!("refusing empty path"),
    }
}

/// The components of a relative path, refusing any that is not a plain name.
pub(super) fn split_dir(path: &Path) -> anyhow::Result<Vec<&OsStr>> {
    path.components()
        .map(|c| match c {
            Component::Normal(name) => Ok(name),
            _ => bail!(
                "refusing path {} that could leave the volume",
                path.display()
            ),
        })
        .collect()
}

fn create_dir(dir: &Dir, name: &OsStr) -> io::Result<()> {
    let mut builder = DirBuilder::new();
    builder.mode(0o755);
    match dir.create_dir_with(name, &builder) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => Err(e),
        _ => Ok(()),
    }
}

/// Whether `name` in `dir` is a symlink (to explain an open that refused to follow one).
pub(super) fn is_symlink(dir: &Dir, name: &OsStr) -> bool {
    dir.symlink_metadata(name).is_ok_and(|m| m.is_symlink())
}
