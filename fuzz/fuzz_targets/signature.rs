//! `X-Hub-Signature-256` parsing and verification never panic, and only the exact MAC verifies.
#![no_main]

use dockhand::github::signature::Signature;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // First byte splits the input into a header and a body.
    let split = data.first().map_or(0, |b| *b as usize).min(data.len());
    let (header, body) = data.split_at(split);
    if let Ok(sig) = Signature::parse(Some(header)) {
        let _ = sig.verify(b"fuzz-secret", body);
        assert!(
            sig.verify(b"", body).is_err(),
            "an empty secret verified a signature"
        );
    }
    let _ = Signature::parse(Some(data));
});
