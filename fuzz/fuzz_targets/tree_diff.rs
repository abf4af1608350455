//! The tree diff over crafted trees (odd names and modes, duplicates, gitlinks, deep nesting,
//! entries naming missing objects): never a panic or a stack overflow, and every change it
//! returns has a path the volume may write.
#![no_main]

use dockhand::git::{fuzzing, Cache, Change, Oid};
use libfuzzer_sys::fuzz_target;

const MODES: [&str; 7] = [
    "100644", "100755", "120000", "40000", "160000", "100664", "1",
];
const NAMES: [&[u8]; 8] = [b"a", b"b", b"..", b".git", b".GIT. ", b"x y", b"", b"a/b"];

struct Repo {
    _dir: tempfile::TempDir,
    cache: Cache,
    blobs: Vec<Oid>,
}

fn open() -> Repo {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open_or_init(&dir.path().join("cache.git")).unwrap();
    let blobs = {
        let odb = cache.repo().odb().unwrap();
        (0..4u8)
            .map(|i| odb.write(git2::ObjectType::Blob, &[b'0' + i]).unwrap())
            .collect()
    };
    Repo {
        _dir: dir,
        cache,
        blobs,
    }
}

thread_local! {
    // One repository for the whole run (libFuzzer calls the target on one thread).
    static REPO: Repo = open();
}

fuzz_target!(|data: &[u8]| REPO.with(|repo| one(repo, data)));

fn one(repo: &Repo, data: &[u8]) {
    let odb = repo.cache.repo().odb().unwrap();
    // Trees are built in order; an entry points at a blob, an earlier tree, or a missing id.
    let mut trees: Vec<Oid> = Vec::new();
    for spec in data.split(|&b| b == 0xff).take(64) {
        let mut bytes = Vec::new();
        for entry in spec.chunks(3) {
            let [m, n, t] = *entry else { break };
            bytes.extend_from_slice(MODES[m as usize % MODES.len()].as_bytes());
            bytes.push(b' ');
            bytes.extend_from_slice(NAMES[n as usize % NAMES.len()]);
            bytes.push(0);
            let target = match t % 3 {
                0 => repo.blobs[(t as usize / 3) % repo.blobs.len()],
                1 if !trees.is_empty() => trees[(t as usize / 3) % trees.len()],
                _ => Oid::from_bytes(&[t; 20]).unwrap(),
            };
            bytes.extend_from_slice(target.as_bytes());
        }
        // A chain: the same tree nested under itself once per spec, for depth.
        trees.push(odb.write(git2::ObjectType::Tree, &bytes).unwrap());
    }
    if trees.len() < 2 {
        return;
    }
    let (old, new) = (trees[trees.len() - 2], trees[trees.len() - 1]);
    for (from, to) in [(Some(old), Some(new)), (None, Some(new)), (Some(new), None)] {
        if let Ok(diff) = repo.cache.diff(from, to) {
            for c in &diff.changes {
                let path = match c {
                    Change::Write { path, .. } | Change::Delete { path } => path,
                };
                assert!(
                    fuzzing::path_is_safe(path.as_os_str().as_encoded_bytes()),
                    "diff returned an unsafe path {path:?}"
                );
            }
        }
    }
}
