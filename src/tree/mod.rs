//! The app's code on the host: the directory its container mounts (the volume), written in
//! place ([`volume`]) or as one release per commit with an atomically switched `current`
//! ([`releases`]).

pub mod releases;
pub mod volume;
