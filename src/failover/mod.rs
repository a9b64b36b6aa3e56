//! Failover: watching main recorders and standing in for them.
//!
//! - `probe`: one health check of a main (tcp, http, rtsp).
//! - `health`: the per-main state machine (`ok`, `suspect`, `taken_over`, `waiting`), pure.
//! - `controller`: probe tasks plus the one task that decides takeovers and owns channel
//!   assignment; `controller::partial`: partial takeover of the channels a main does not record.
//! - `recording`: one recording-health check of a main (which channels it records).
//! - `events`: operator-visible events (log, catalog, webhooks).
//! - `persist`: which mains are failed, across restarts.
//! - `standby`: the hot-standby prebuffer (whole GOPs in memory).
//! - `standbys`: the standby sessions of hot and warm mains, the memory split, the hand-over.

pub mod controller;
pub mod events;
pub mod health;
pub mod outbound;
pub mod persist;
pub mod probe;
pub mod recording;
pub mod standby;
pub mod standbys;

pub use controller::{Failover, MainMetrics, MainStatus};
pub use events::EventSink;
pub use standbys::{Handoff, Standbys, StandbyView};
