//! The same-host copier against real origins on disk.

use std::path::Path;
use std::time::Duration;

use git2::Signature;
use tempfile::TempDir;

use super::*;
use crate::git::test_support::{
    cache_in, fetched, limits, listed, nested_dirs, tagged_origin, Origin, FILE,
};
use crate::git::Access;

fn object_count(cache: &Cache) -> usize {
    let mut n = 0;
    cache
        .repo()
        .odb()
        .unwrap()
        .foreach(|_| {
            n += 1;
            true
        })
        .unwrap();
    n
}

#[test]
fn a_big_file_is_copied_from_a_packed_or_loose_origin_blob_intact() {
    let big: Vec<u8> = (0..STREAM_ABOVE as u32 + 4099)
        .map(|i| (i % 251) as u8)
        .collect();
    for packed in [false, true] {
        let origin = Origin::new();
        origin.commit("refs/heads/main", &[("a", FILE, b"a\n")]);
        let (_state, cache) = fetched(&origin, "refs/heads/main");
        let tip = origin.commit(
            "refs/heads/main",
            &[("a", FILE, b"a\n"), ("big", FILE, &big)],
        );
        if packed {
            origin.repack();
        }
        let refs = ["refs/heads/main".to_owned()];
        cache
            .fetch(&origin.url(), &refs, &Access::default(), &limits())
            .unwrap();
        let tree = cache.repo().find_commit(tip).unwrap().tree().unwrap();
        let id = tree.get_name("big").unwrap().id();
        let mut copied = Vec::new();
        cache.copy_blob(id, &mut copied).unwrap();
        assert!(
            copied == big,
            "the copied blob differs (origin packed: {packed})"
        );
    }
}

#[test]
fn local_fetch_copies_only_the_objects_the_cache_lacks() {
    let origin = Origin::new();
    let files: Vec<(String, Vec<u8>)> = (0..60)
        .map(|i| (format!("d{}/e/f{i}.txt", i % 3), vec![b'x'; i]))
        .collect();
    let spec: Vec<(&str, i32, &[u8])> = files
        .iter()
        .map(|(p, c)| (p.as_str(), FILE, c.as_slice()))
        .collect();
    origin.commit("refs/heads/main", &spec);
    let (_state, cache) = fetched(&origin, "refs/heads/main");
    let before = object_count(&cache);

    let mut spec = spec.clone();
    spec[0].2 = b"changed";
    let tip = origin.commit("refs/heads/main", &spec);
    fetch_main(&cache, &origin).unwrap();

    assert_eq!(cache.resolve("refs/heads/main").unwrap(), Some(tip));
    // The new blob, the trees d0/e, d0 and the root, and the commit: nothing else.
    assert_eq!(object_count(&cache) - before, 5);
    assert!(
        cache.changes(None, Some(tip)).unwrap().len() == 60,
        "the new tree is complete"
    );
}

/// Fetch the origin's `main` into `cache` again.
fn fetch_main(cache: &Cache, origin: &Origin) -> anyhow::Result<()> {
    let refs = ["refs/heads/main".to_owned()];
    cache.fetch(&origin.url(), &refs, &Access::default(), &limits())
}

/// The loose file of `id` under a repository's objects directory.
fn loose_file(repo: &Path, id: Oid) -> std::path::PathBuf {
    let hex = id.to_string();
    repo.join("objects").join(&hex[..2]).join(&hex[2..])
}

#[test]
fn objects_the_origin_holds_loose_are_linked_into_the_cache_not_rewritten() {
    use std::os::unix::fs::MetadataExt;
    let origin = Origin::new();
    origin.commit("refs/heads/main", &[("a.txt", FILE, b"one")]);
    let (_state, cache) = fetched(&origin, "refs/heads/main");
    let tip = origin.commit("refs/heads/main", &[("a.txt", FILE, b"two")]);
    fetch_main(&cache, &origin).unwrap();
    let blob = cache.repo().find_commit(tip).unwrap().tree().unwrap();
    let blob = blob.get_name("a.txt").unwrap().id();
    for id in [tip, blob] {
        let at_origin = std::fs::metadata(loose_file(&origin.path(), id)).unwrap();
        let in_cache = std::fs::metadata(loose_file(cache.repo().path(), id)).unwrap();
        assert_eq!(at_origin.ino(), in_cache.ino(), "{id} is one file in both");
    }
    assert_eq!(cache.changes(None, Some(tip)).unwrap().len(), 1);
}

#[test]
fn a_loose_origin_file_holding_other_bytes_than_its_name_is_refused_when_read() {
    let origin = Origin::new();
    origin.commit("refs/heads/main", &[("a.txt", FILE, b"one")]);
    let (_state, cache) = fetched(&origin, "refs/heads/main");
    let tip = origin.commit("refs/heads/main", &[("a.txt", FILE, b"two")]);
    let repo = git2::Repository::open(origin.path()).unwrap();
    let blob = repo.find_commit(tip).unwrap().tree().unwrap();
    let blob = blob.get_name("a.txt").unwrap().id();
    // Swap the blob's file for another object's (a valid object, the wrong one).
    let other = repo.blob(b"not what the tree names").unwrap();
    let path = loose_file(&origin.path(), blob);
    std::fs::remove_file(&path).unwrap();
    std::fs::copy(loose_file(&origin.path(), other), &path).unwrap();
    fetch_main(&cache, &origin).unwrap();
    let mut out = Vec::new();
    let err = cache.copy_blob(blob, &mut out).unwrap_err();
    assert!(format!("{err:#}").contains("hash"), "{err:#}");
    assert!(out.is_empty(), "no byte of the wrong content is handed out");
}

#[test]
fn incremental_local_fetch_enforces_the_size_cap_and_leaves_the_ref_alone() {
    let origin = Origin::new();
    let first = origin.commit("refs/heads/main", &[("a", FILE, b"1")]);
    let (_state, cache) = fetched(&origin, "refs/heads/main");
    let big: Vec<u8> = (0..50_000u32).flat_map(|i| i.to_le_bytes()).collect();
    origin.commit(
        "refs/heads/main",
        &[("a", FILE, b"1"), ("big.bin", FILE, &big)],
    );
    let tiny = FetchLimits {
        timeout: Duration::from_secs(60),
        max_bytes: 1000,
    };
    let err = cache
        .fetch(
            &origin.url(),
            &["refs/heads/main".to_owned()],
            &Access::default(),
            &tiny,
        )
        .unwrap_err();
    assert!(format!("{err:#}").contains("size cap"), "{err:#}");
    assert_eq!(cache.resolve("refs/heads/main").unwrap(), Some(first));
}

#[test]
fn fetch_copies_a_branch_from_a_file_url() {
    let origin = Origin::new();
    let tip = origin.commit("refs/heads/main", &[("index.html", FILE, b"hi")]);

    let (_state, cache) = fetched(&origin, "refs/heads/main");

    assert_eq!(cache.resolve("refs/heads/main").unwrap(), Some(tip));
}

#[test]
fn fetch_copies_a_branch_from_a_plain_path_and_follows_force_pushes() {
    let origin = Origin::new();
    origin.commit("refs/heads/main", &[("a", FILE, b"1")]);
    let state = TempDir::new().unwrap();
    let cache = cache_in(state.path());
    let url = origin.path().display().to_string();
    let refs = ["refs/heads/main".to_owned()];
    cache
        .fetch(&url, &refs, &Access::default(), &limits())
        .unwrap();
    // Rewrite history: a root commit that does not descend from the fetched tip.
    let tree = origin.tree(&[("b", FILE, b"2")]);
    let sig = Signature::now("x", "x@example.com").unwrap();
    let rewritten = origin
        .repo
        .commit(
            None,
            &sig,
            &sig,
            "rewritten",
            &origin.repo.find_tree(tree).unwrap(),
            &[],
        )
        .unwrap();
    origin
        .repo
        .reference("refs/heads/main", rewritten, true, "force")
        .unwrap();

    cache
        .fetch(&url, &refs, &Access::default(), &limits())
        .unwrap();

    assert_eq!(cache.resolve("refs/heads/main").unwrap(), Some(rewritten));
}

#[test]
fn remote_tips_of_a_local_origin_are_its_refs_with_tags_peeled() {
    let (origin, want) = tagged_origin();
    for url in [origin.url(), origin.path().display().to_string()] {
        let tips = Cache::remote_tips(
            &url,
            &listed(),
            &Access::default(),
            &limits(),
            Path::new("/nonexistent"),
        )
        .unwrap();
        assert_eq!(tips, want, "{url}");
    }
    let none = Cache::remote_tips(
        &origin.url(),
        &["refs/heads/gone".to_owned()],
        &Access::default(),
        &limits(),
        Path::new("/nonexistent"),
    )
    .unwrap();
    assert!(none.is_empty(), "{none:?}");
}

#[test]
fn remote_tips_of_a_missing_local_origin_fail_naming_it_and_refuse_bad_names() {
    let origin = Origin::new();
    let gone = origin.dir.path().join("moved-away.git");
    let err = Cache::remote_tips(
        &gone.display().to_string(),
        &listed(),
        &Access::default(),
        &limits(),
        Path::new("/nonexistent"),
    )
    .unwrap_err();
    assert!(
        format!("{err:#}").contains(&format!("opening origin {}", gone.display())),
        "{err:#}"
    );
    for (url, refs) in [
        ("-x", listed()),
        (&origin.url()[..], vec!["main".to_owned()]),
    ] {
        assert!(Cache::remote_tips(
            url,
            &refs,
            &Access::default(),
            &limits(),
            Path::new("/nonexistent")
        )
        .is_err());
    }
}

#[test]
fn a_fetch_of_a_deeply_nested_tree_or_tag_chain_does_not_overflow_its_stack() {
    // The first fetch copies object files; the next copies objects one by one, walking the
    // new trees and tags — as deep as a crafted commit makes them.
    let origin = Origin::new();
    origin.commit("refs/heads/main", &[("a", 0o100644, b"a")]);
    let (_state, cache) = fetched(&origin, "refs/heads/main");
    let repo = &origin.repo;
    let tree = nested_dirs(repo, 20_000);
    let tip = origin.commit_tree("refs/heads/main", tree, "deep");
    let sig = Signature::now("Ada Lovelace", "ada@example.com").unwrap();
    let mut tag = tip;
    for i in 0..20_000 {
        let target = repo.find_object(tag, None).unwrap();
        tag = repo
            .tag_annotation_create(&format!("t{i}"), &target, &sig, "t")
            .unwrap();
    }
    repo.reference("refs/tags/deep", tag, true, "").unwrap();
    let url = origin.url();
    let fetch = std::thread::Builder::new()
        .stack_size(2 << 20) // a tokio blocking thread's
        .spawn(move || {
            let refs = ["refs/heads/main".to_owned(), "refs/tags/deep".to_owned()];
            cache.fetch(&url, &refs, &Access::default(), &limits())?;
            anyhow::Ok(cache)
        })
        .unwrap()
        .join()
        .expect("the fetch must not overflow its stack")
        .unwrap();
    assert_eq!(fetch.resolve("refs/tags/deep").unwrap(), Some(tip));
    assert!(fetch.repo.find_tree(tree).is_ok());
    let err = format!("{:#}", fetch.changes(None, Some(tip)).unwrap_err());
    assert!(err.contains("more than 1024 directories"), "{err}");
}
