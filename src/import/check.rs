//! One RTSP DESCRIBE per camera (cameras limit concurrent sessions, so no SETUP/PLAY): proves the
//! URL and password and reads codec and resolution from the SDP.

use std::time::Duration;

use retina::client::{SessionOptions, TeardownPolicy};
use retina::codec::ParametersRef;

use super::Credentials;

#[derive(Debug)]
pub enum DescribeError {
    Unauthorized,
    Other(String),
}

/// DESCRIBE `url`; on success "H264 1280x720" (resolution when the SDP carries parameter sets).
pub async fn describe(url: &url::Url, creds: Option<&Credentials>, timeout: Duration) -> Result<String, DescribeError> {
    let options = SessionOptions::default()
        .creds(creds.map(|c| retina::client::Credentials { username: c.user.clone(), password: c.password.expose().to_owned() }))
        .user_agent(format!("understudy/{} import", env!("CARGO_PKG_VERSION")))
        .teardown(TeardownPolicy::Never);
    let session = match tokio::time::timeout(timeout, retina::client::Session::describe(url.clone(), options)).await {
        Err(_) => return Err(DescribeError::Other(format!("no answer within {timeout:?}"))),
        Ok(Err(e)) => {
            let s = e.to_string();
            if s.contains("401") || s.contains("Unauthorized") {
                return Err(DescribeError::Unauthorized);
            }
            return Err(DescribeError::Other(s));
        }
        Ok(Ok(s)) => s,
    };
    let streams = session.streams();
    let Some(video) = streams.iter().find(|s| s.media() == "video") else {
        return Err(DescribeError::Other("no video stream in the SDP".to_owned()));
    };
    let codec = video.encoding_name().to_ascii_uppercase();
    Ok(match video.parameters() {
        Some(ParametersRef::Video(p)) => {
            let (w, h) = p.pixel_dimensions();
            format!("{codec} {w}x{h}")
        }
        _ => codec,
    })
}
