//! Understudy's allocated disks: volumes, fragmented-MP4 segment files, the catalog, retention and reads.
//!
//! This crate knows nothing of RTSP: it takes video frames (`InputFrame`) with codec parameters
//! (`TrackParams`) and makes them durable on the volumes allocated to this box.

pub mod fmp4;
pub mod track;

pub use track::{InputFrame, TrackParams};
