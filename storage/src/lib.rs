//! Understudy's allocated disks: volumes, fragmented-MP4 segment files, the catalog, retention and reads.
//!
//! This crate knows nothing of RTSP: it takes video frames (`InputFrame`) with codec parameters
//! (`TrackParams`) and makes them durable on the volumes allocated to this box.
//!
//! - `Store` opens the catalog and volumes and indexes the files (`indexing`);
//! - a `ChannelWriter` per channel writes segments (`writer`), which one syncer thread per
//!   volume makes durable and catalogs in batches (`syncer`), then applies `retention`;
//! - `Store::recordings` and `Store::export` read them back (`reads`).

pub mod fmp4;
pub mod live;
pub mod track;

mod catalog;
mod config;
mod error;
mod fsutil;
mod indexing;
mod naming;
mod reads;
mod retention;
mod segment;
mod stats;
mod store;
mod syncer;
pub mod telemetry;
mod volume;
mod writer;

pub use catalog::EventRecord;
pub use config::{default_reserve, StoreConfig, VolumeConfig};
#[cfg(feature = "fault-injection")]
pub use fsutil::faults;
pub use error::{Error, Result};
pub use indexing::ReindexSummary;
pub use reads::{ExportSummary, Playback, SegmentInfo};
pub use stats::DurableStats;
pub use store::Store;
pub use telemetry::{HistogramSnapshot, LatencyHistogram, VolumeMetrics};
pub use track::{AudioParams, InputAudio, InputFrame, TrackParams, TIMESCALE};
pub use volume::VolumeStatus;
pub use writer::ChannelWriter;

/// The name of the marker file at the root of every volume.
pub const VOLUME_MARKER: &str = volume::marker::MARKER_NAME;
