//! Camera simulator: an RTSP/1.0 server (RFC 2326) looping fixture clips as many cameras.
//!
//! Each camera is served at `rtsp://ADDR/cam/{id}` over RTP/AVP/TCP interleaved, video and,
//! optionally, audio (AAC or G.711, [`audio`]). Clips are read
//! from MP4 files and packetized into RTP payloads once ([`clip`], [`packetize`]); every session
//! shares those bytes and only builds its own 16 bytes of interleave + RTP header per packet
//! ([`sender`]). Before each access unit a session sends a user-data SEI tagging the camera and
//! frame number ([`sei`]), so a recording proves which camera it came from. Faults ([`Fault`])
//! can be injected per camera to exercise a recorder's error paths.

mod audio;
mod auth;
mod cli;
mod clip;
mod config;
mod conn;
mod error;
mod methods;
mod mp4;
mod packetize;
mod rtsp;
mod sdp;
mod sei;
mod sender;
mod server;

pub use auth::Authenticator;
pub use cli::{run_cli, CamsimArgs, ClockPpm, FaultSpec};
pub use config::{AuthConfig, AuthScheme, CamSimConfig, CameraSpec, Fault, Pacing};
pub use error::CamSimError;
pub use sei::{find_camsim_tags, CAMSIM_SEI_UUID};
pub use server::{CamSim, CamSimStats, CameraStats};
