//! Touching a file to make the app reload: the mtime always moves on by a whole second at least,
//! and only a regular file is touched — never a symlink (nor through one), a FIFO or a device.

use std::path::Path;
use std::time::SystemTime;

use anyhow::{bail, Context};
use cap_fs_ext::{FollowSymlinks, OpenOptionsFollowExt};
use cap_std::fs::{OpenOptions, OpenOptionsExt};

use super::walk::{is_symlink, split, Walk};
use super::Volume;

impl Volume {
    /// Set the mtime of `rel` to now, creating an empty file if missing. Refuses (error) when `rel`
    /// or any parent is a symlink.
    pub fn touch(&self, rel: &Path) -> anyhow::Result<()> {
        let (parents, name) = split(rel)?;
        let stack = self.walk(&parents, rel, Walk::Touch)?;
        let dir = stack.as_ref().and_then(|s| s.last()).unwrap_or(&self.dir);
        // Only a regular file is touched: opening a FIFO the app (or its container) put there
        // would block forever, a device could do anything. O_NONBLOCK keeps even a FIFO swapped
        // in after the look from blocking the open; the opened file is checked again.
        match dir.symlink_metadata(name) {
            Ok(meta) if meta.file_type().is_symlink() => {
                bail!("refusing to touch symlink {}", rel.display())
            }
            Ok(meta) if !meta.is_file() => bail!(
                "refusing to touch {}: it is not a regular file (a FIFO, socket, device or directory)",
                rel.display()
            ),
            _ => {}
        }
        let mut options = OpenOptions::new();
        options
            .write(true)
            .create(true)
            .mode(0o644)
            .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
            .follow(FollowSymlinks::No);
        let file = match dir.open_with(name, &options) {
            Ok(file) => file,
            Err(_) if is_symlink(dir, name) => {
                bail!("refusing to touch symlink {}", rel.display())
            }
            Err(e) => return Err(e).with_context(|| format!("opening {}", rel.display())),
        };
        let file = file.into_std();
        if !file.metadata().is_ok_and(|m| m.is_file()) {
            bail!(
                "refusing to touch {}: it is not a regular file",
                rel.display()
            );
        }
        let now = touch_time(
            SystemTime::now(),
            file.metadata().and_then(|m| m.modified()).ok(),
        );
        file.set_times(
            std::fs::FileTimes::new()
                .set_accessed(now)
                .set_modified(now),
        )
        .with_context(|| format!("setting the mtime of {}", rel.display()))
    }
}

/// The mtime a touch sets: now, unless that is in the same whole second as the file's mtime
/// already (two deploys within a second). Watchers that compare whole seconds (uWSGI's
/// `touch-reload` keeps `st_mtime`) would miss it; one second past the old mtime they see.
fn touch_time(now: SystemTime, old: Option<SystemTime>) -> SystemTime {
    let secs = |t: SystemTime| {
        t.duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    };
    match old {
        Some(old) if secs(now) <= secs(old) => {
            SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(secs(old) + 1)
        }
        _ => now,
    }
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::symlink;
    use std::path::Path;
    use std::time::{Duration, SystemTime};

    use tempfile::TempDir;

    use super::*;

    #[test]
    fn two_touches_within_a_second_differ_in_whole_seconds() {
        // uWSGI's touch-reload compares st_mtime in seconds: a second touch within the same
        // second as the file's write must still move it.
        let dir = TempDir::new().unwrap();
        fs::write(dir.path().join("uwsgi.ini"), "[uwsgi]\n").unwrap();
        let volume = Volume::open(dir.path()).unwrap();
        let secs = || {
            fs::metadata(dir.path().join("uwsgi.ini"))
                .unwrap()
                .modified()
                .unwrap()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap()
                .as_secs()
        };
        let mut seen = vec![secs()];
        for _ in 0..3 {
            volume.touch(Path::new("uwsgi.ini")).unwrap();
            seen.push(secs());
        }
        assert!(seen.windows(2).all(|w| w[1] > w[0]), "{seen:?}");
        // An mtime already in a later second is never moved back.
        let later = SystemTime::UNIX_EPOCH + Duration::from_secs(4_000_000_000);
        assert_eq!(
            touch_time(SystemTime::now(), Some(later)),
            later + Duration::from_secs(1)
        );
        let now = SystemTime::now();
        assert_eq!(touch_time(now, Some(now - Duration::from_secs(5))), now);
    }

    /// A volume at `<tmp>/vol`.
    fn volume() -> (TempDir, Volume) {
        let tmp = TempDir::new().unwrap();
        let volume = Volume::open(&tmp.path().join("vol")).unwrap();
        (tmp, volume)
    }

    #[test]
    fn touch_creates_a_missing_file_and_bumps_an_existing_one() {
        let (tmp, volume) = volume();
        let long_ago = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);

        volume.touch(Path::new("conf/reload")).unwrap();
        let created = tmp.path().join("vol").join("conf/reload");
        assert_eq!(fs::read(&created).unwrap(), b"");
        fs::File::options()
            .write(true)
            .open(&created)
            .unwrap()
            .set_modified(long_ago)
            .unwrap();
        volume.touch(Path::new("conf/reload")).unwrap();

        assert!(fs::metadata(&created).unwrap().modified().unwrap() > long_ago);
    }

    #[test]
    fn touch_refuses_a_fifo_at_once_instead_of_blocking_on_it() {
        let (tmp, volume) = volume();
        let fifo = tmp.path().join("vol").join("uwsgi.ini");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());

        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(format!(
                "{:#}",
                volume.touch(Path::new("uwsgi.ini")).unwrap_err()
            ));
        });
        let err = rx
            .recv_timeout(Duration::from_secs(5))
            .expect("touch blocked on the FIFO");
        assert!(err.contains("not a regular file"), "{err}");
    }

    #[test]
    fn touch_refuses_a_symlink_and_leaves_its_target_alone() {
        let (tmp, volume) = volume();
        let outside = TempDir::new().unwrap();
        let target = outside.path().join("victim");
        fs::write(&target, "x").unwrap();
        let long_ago = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        fs::File::options()
            .write(true)
            .open(&target)
            .unwrap()
            .set_modified(long_ago)
            .unwrap();
        symlink(&target, tmp.path().join("vol").join("reload")).unwrap();
        symlink(outside.path(), tmp.path().join("vol").join("conf")).unwrap();

        let err = volume.touch(Path::new("reload")).unwrap_err();
        let parent_err = volume.touch(Path::new("conf/reload")).unwrap_err();

        assert!(
            format!("{err:#}").contains("refusing to touch symlink reload"),
            "{err:#}"
        );
        assert!(
            format!("{parent_err:#}").contains("refusing to write through symlink conf"),
            "{parent_err:#}"
        );
        assert_eq!(fs::metadata(&target).unwrap().modified().unwrap(), long_ago);
        assert!(!outside.path().join("reload").exists());
    }
}
