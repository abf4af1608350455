//! Delivery bodies (JSON and form-encoded) for every event name never panic.
#![no_main]

use dockhand::github::events::{json_body, parse};
use libfuzzer_sys::fuzz_target;

const EVENTS: [&str; 3] = ["push", "ping", "release"];
const TYPES: [&str; 4] = [
    "application/json",
    "application/json; charset=utf-8",
    "application/x-www-form-urlencoded",
    "text/plain",
];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let event = EVENTS[(selector & 0x03) as usize % EVENTS.len()];
    let content_type = TYPES[((selector >> 2) & 0x03) as usize];
    if let Ok(json) = json_body(Some(content_type), body) {
        let _ = parse(event, &json);
    }
    let _ = parse(event, body);
});
