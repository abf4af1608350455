//! Ref names and tree paths: validation never panics, and what it accepts is safe to use.
#![no_main]

use dockhand::git::fuzzing;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if fuzzing::path_is_safe(data) {
        let path = std::path::Path::new(
            <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(data),
        );
        for c in path.components() {
            assert!(
                matches!(c, std::path::Component::Normal(n) if n != ".git"),
                "an accepted path has component {c:?}: {data:?}"
            );
        }
    }
    if let Ok(name) = std::str::from_utf8(data) {
        if fuzzing::ref_is_fetchable(name) {
            assert!(
                name.starts_with("refs/") && !name.starts_with('-'),
                "{name:?}"
            );
        }
    }
});
