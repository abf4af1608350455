//! GitHub webhooks: signature verification and event payloads.

pub mod events;
pub mod signature;
