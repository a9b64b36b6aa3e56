//! Understudy: a failover recorder for video surveillance. This library holds everything the
//! `understudy` binary does (config, CLI commands, the camera simulator, wiring of recorder and
//! storage) so integration tests and benches can drive it in-process.

pub mod camsim;
pub mod config;
