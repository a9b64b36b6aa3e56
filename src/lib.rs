//! Understudy: a failover recorder for video surveillance. This library holds everything the
//! `understudy` binary does (config, CLI commands, the camera simulator, failover, the HTTP API,
//! wiring of recorder and storage) so integration tests and benches can drive it in-process.

pub mod api;
pub mod auth;
pub mod camsim;
pub mod chanstate;
pub mod cli;
pub mod commands;
pub mod config;
pub mod daemon;
pub mod failover;
pub mod logging;
pub mod import;
pub mod pipeline;
pub mod service;
pub mod signals;
pub mod simmain;
pub mod station;
