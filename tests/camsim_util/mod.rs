//! Helpers shared by the camsim integration tests: fixtures, starting a simulator, and a
//! retina client.
#![allow(dead_code)]

use std::path::PathBuf;
use std::time::Duration;

use futures::StreamExt;
use retina::client::{
    Demuxed, PlayOptions, SessionOptions, SetupOptions, TcpTransportOptions, Transport,
};
use retina::codec::{CodecItem, VideoFrame};
use understudy::camsim::{AuthConfig, CamSim, CamSimConfig, Pacing};

pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
}

/// Starts a simulator on 127.0.0.1:0 with `n` cameras looping `clip`.
pub async fn start(clip: &str, n: u32, pacing: Pacing, auth: Option<AuthConfig>) -> CamSim {
    let mut cfg = CamSimConfig::new("127.0.0.1:0".parse().unwrap(), n, fixture(clip));
    cfg.pacing = pacing;
    cfg.auth = auth;
    CamSim::start(cfg).await.expect("camsim starts")
}

/// describe → setup(TCP, MP4 frame format) → play → demuxed.
pub async fn play(url: &str, creds: Option<(&str, &str)>) -> Result<Demuxed, retina::Error> {
    let opts = SessionOptions::default().creds(creds.map(|(u, p)| retina::client::Credentials {
        username: u.to_string(),
        password: p.to_string(),
    }));
    let mut session = retina::client::Session::describe(url.parse().unwrap(), opts).await?;
    session
        .setup(
            0,
            SetupOptions::default()
                .transport(Transport::Tcp(TcpTransportOptions::default()))
                .frame_format(retina::codec::FrameFormat::MP4),
        )
        .await?;
    session.play(PlayOptions::default()).await?.demuxed()
}

/// What the next item of a session was.
pub enum Next {
    Frame(VideoFrame),
    Error(retina::Error),
    End,
    Timeout,
}

/// The next video frame, skipping other items, waiting at most `wait`.
pub async fn next_frame(d: &mut Demuxed, wait: Duration) -> Next {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, d.next()).await {
            Err(_) => return Next::Timeout,
            Ok(None) => return Next::End,
            Ok(Some(Err(e))) => return Next::Error(e),
            Ok(Some(Ok(CodecItem::VideoFrame(f)))) => return Next::Frame(f),
            Ok(Some(Ok(_))) => continue,
        }
    }
}

/// The next video frame; panics on anything else.
pub async fn frame(d: &mut Demuxed) -> VideoFrame {
    match next_frame(d, Duration::from_secs(20)).await {
        Next::Frame(f) => f,
        Next::Error(e) => panic!("session error: {e}"),
        Next::End => panic!("session ended"),
        Next::Timeout => panic!("no frame in 20 s"),
    }
}

/// Pixel dimensions of the session's video stream as currently known.
pub fn dimensions(d: &Demuxed) -> Option<(u32, u32)> {
    match d.streams()[0].parameters()? {
        retina::codec::ParametersRef::Video(v) => Some(v.pixel_dimensions()),
        _ => None,
    }
}
