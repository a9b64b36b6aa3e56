//! RTSP method handlers (RFC 2326 §10): OPTIONS, DESCRIBE, SETUP (TCP interleaved only; the
//! video track, then optionally the audio track, in one session),
//! PLAY, GET_PARAMETER/SET_PARAMETER keepalives and TEARDOWN, with authentication and the
//! session checks of §12.37.

use std::sync::Arc;

use tracing::info;

use super::audio::{AudioSender, AUDIO_CONTROL};
use super::conn::{AudioSetup, Conn, Setup, State};
use super::rtsp::{self, Request, Response};
use super::sdp;
use super::sender::RtpSender;
use super::server::Camera;

/// Methods we implement (OPTIONS `Public`, 405 `Allow`).
const PUBLIC: &str = "OPTIONS, DESCRIBE, SETUP, PLAY, TEARDOWN, GET_PARAMETER, SET_PARAMETER";

impl Conn {
    /// Answers one request, updating the session state.
    pub(super) fn handle(&mut self, req: &Request) -> Response {
        if req.cseq().is_none() {
            return Response::new(400);
        }
        match req.method.as_str() {
            "OPTIONS" => Response::new(200).header("Public", PUBLIC),
            "DESCRIBE" | "SETUP" | "PLAY" | "TEARDOWN" | "GET_PARAMETER" | "SET_PARAMETER" => {
                if !self
                    .shared
                    .auth
                    .check(&req.method, req.header("Authorization"))
                {
                    self.unauthorized()
                } else {
                    match req.method.as_str() {
                        "DESCRIBE" => self.describe(req),
                        "SETUP" => self.setup(req),
                        "PLAY" => self.play(req),
                        "TEARDOWN" => self.teardown(req),
                        _ => self.keepalive(req),
                    }
                }
            }
            // Valid RTSP methods this server does not allow (RFC 2326 §11.3.6).
            "PAUSE" | "ANNOUNCE" | "RECORD" | "REDIRECT" => {
                Response::new(405).header("Allow", PUBLIC)
            }
            _ => Response::new(501),
        }
    }

    fn unauthorized(&self) -> Response {
        Response::new(401).header("WWW-Authenticate", self.shared.auth.challenge())
    }

    /// The camera addressed by `uri`: `/cam/N` (presentation) or, if `track` is allowed,
    /// also `/cam/N/trackID=0` (video) and, for a camera with audio, `/cam/N/trackID=1`.
    /// The flag says whether the audio track was addressed.
    fn route(&self, uri: &str, track: bool) -> Option<(Arc<Camera>, bool)> {
        let path = rtsp::uri_path(uri).trim_end_matches('/');
        let rest = path.strip_prefix("/cam/")?;
        let (id, tail) = rest.split_once('/').unwrap_or((rest, ""));
        if id.starts_with('+') {
            return None;
        }
        let camera = self.shared.cameras.get(&id.parse().ok()?).cloned()?;
        let audio = track && tail == AUDIO_CONTROL && camera.audio.is_some();
        let ok_tail = tail.is_empty() || (track && tail == sdp::TRACK_CONTROL) || audio;
        ok_tail.then_some((camera, audio))
    }

    /// Absolute form of a request URI, without user info and trailing `/`.
    fn absolute(&self, uri: &str) -> String {
        let s = if uri.contains("://") {
            rtsp::strip_userinfo(uri)
        } else {
            format!("rtsp://{}{}", self.local, uri)
        };
        s.trim_end_matches('/').to_string()
    }

    fn session_header(&self, setup: &Setup) -> String {
        let secs = self.shared.session_timeout.as_secs().max(1);
        format!("{};timeout={secs}", setup.session_id)
    }

    /// Checks the request's `Session` header against ours (RFC 2326 §12.37): a different id is
    /// 454; a missing one is tolerated.
    fn check_session(&self, req: &Request) -> Result<(), Response> {
        let Some(theirs) = req.header("Session") else {
            return Ok(());
        };
        let theirs = theirs.split(';').next().unwrap_or_default().trim();
        match self.state.setup() {
            Some(s) if s.session_id == theirs => Ok(()),
            _ => Err(Response::new(454)),
        }
    }

    fn describe(&mut self, req: &Request) -> Response {
        let Some((camera, _)) = self.route(&req.uri, false) else {
            return Response::new(404);
        };
        self.note_camera(camera.id);
        if camera.rejecting_auth() {
            return self.unauthorized();
        }
        let clip = camera.clip();
        let audio = camera.audio.as_deref();
        let sdp = sdp::describe(camera.id, &clip, audio, rand::random::<u32>().into());
        Response::new(200)
            .header("Content-Base", format!("{}/", self.absolute(&req.uri)))
            .body("application/sdp", sdp)
    }

    fn setup(&mut self, req: &Request) -> Response {
        let Some((camera, is_audio)) = self.route(&req.uri, true) else {
            return Response::new(404);
        };
        self.note_camera(camera.id);
        if let Err(r) = self.check_session(req) {
            return r;
        }
        let Some(transport) = req.header("Transport") else {
            return Response::new(400);
        };
        let Some(channel) = tcp_interleaved_channel(transport) else {
            return Response::new(461);
        };
        if is_audio {
            return self.setup_audio(req, &camera, channel);
        }
        let (session_id, audio) = match std::mem::replace(&mut self.state, State::Init) {
            State::Init => (format!("{:016X}", rand::random::<u64>()), None),
            State::Ready(s) if Arc::ptr_eq(&s.camera, &camera) => (s.session_id, s.audio),
            // One session per connection, of one camera.
            other @ State::Ready(_) => {
                self.state = other;
                return Response::new(459);
            }
            other @ (State::Playing(_) | State::Stalled(_)) => {
                self.state = other;
                return Response::new(455);
            }
        };
        let sender = RtpSender::new(camera.id, camera.clip(), channel, camera.clock_ppm);
        let transport = format!(
            "RTP/AVP/TCP;unicast;interleaved={}-{};ssrc={:08X};mode=\"PLAY\"",
            channel,
            channel + 1,
            sender.ssrc()
        );
        let setup = Setup {
            session_id,
            camera,
            track_url: self.absolute(&req.uri),
            sender,
            audio,
        };
        let resp = Response::new(200)
            .header("Transport", transport)
            .header("Session", self.session_header(&setup));
        self.state = State::Ready(setup);
        resp
    }

    /// SETUP of the audio track: only after the video track's, in the same session.
    fn setup_audio(&mut self, req: &Request, camera: &Arc<Camera>, channel: u8) -> Response {
        let track_url = self.absolute(&req.uri);
        let State::Ready(setup) = &mut self.state else {
            // Audio-only sessions are not served: SETUP the video track first.
            return Response::new(455);
        };
        let Some(clip) = camera.audio.clone() else {
            return Response::new(404);
        };
        if !Arc::ptr_eq(&setup.camera, camera) {
            return Response::new(459);
        }
        if channel == setup.sender.channel() {
            return Response::new(461);
        }
        let sender = AudioSender::new(clip, channel, camera.clock_ppm);
        let transport = format!(
            "RTP/AVP/TCP;unicast;interleaved={}-{};ssrc={:08X};mode=\"PLAY\"",
            channel,
            channel.saturating_add(1),
            sender.ssrc()
        );
        setup.audio = Some(AudioSetup { track_url, sender });
        let Some(setup) = self.state.setup() else {
            return Response::new(455);
        };
        Response::new(200)
            .header("Transport", transport)
            .header("Session", self.session_header(setup))
    }

    fn play(&mut self, req: &Request) -> Response {
        if let Err(r) = self.check_session(req) {
            return r;
        }
        if matches!(self.state, State::Init) {
            return Response::new(455);
        }
        self.start_playing();
        let Some(setup) = self.state.setup() else {
            return Response::new(455);
        };
        let mut rtp_info = format!(
            "url={};seq={};rtptime={}",
            setup.track_url,
            setup.sender.next_seq(),
            setup.sender.next_rtptime()
        );
        if let Some(a) = &setup.audio {
            rtp_info.push_str(&format!(
                ",url={};seq={};rtptime={}",
                a.track_url,
                a.sender.next_seq(),
                a.sender.next_rtptime()
            ));
        }
        Response::new(200)
            .header("Session", self.session_header(setup))
            .header("Range", "npt=0.000-")
            .header("RTP-Info", rtp_info)
    }

    fn teardown(&mut self, req: &Request) -> Response {
        if let Err(r) = self.check_session(req) {
            return r;
        }
        if let Some(s) = self.state.setup() {
            info!(session = %s.session_id, "teardown");
        }
        self.state = State::Init;
        Response::new(200)
    }

    fn keepalive(&mut self, req: &Request) -> Response {
        if let Err(r) = self.check_session(req) {
            return r;
        }
        match self.state.setup() {
            Some(s) => Response::new(200).header("Session", self.session_header(s)),
            None => Response::new(200),
        }
    }
}

/// The first interleaved channel of the first `RTP/AVP/TCP` transport offered (RFC 2326
/// §12.39); `interleaved=` absent means 0-1. `None` if only UDP is offered.
fn tcp_interleaved_channel(header: &str) -> Option<u8> {
    header.split(',').find_map(|spec| {
        let mut params = spec.split(';').map(str::trim);
        let proto = params.next()?;
        if !proto.eq_ignore_ascii_case("RTP/AVP/TCP") {
            return None;
        }
        let mut channel = Some(0u8);
        for p in params {
            if let Some(v) = p.strip_prefix("interleaved=") {
                let first = v.split('-').next().unwrap_or(v);
                channel = first.trim().parse::<u8>().ok().filter(|&c| c < 255);
            }
        }
        channel
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transport_selection() {
        assert_eq!(
            tcp_interleaved_channel("RTP/AVP/TCP;unicast;interleaved=0-1"),
            Some(0)
        );
        assert_eq!(
            tcp_interleaved_channel(
                "RTP/AVP;unicast;client_port=5000-5001,RTP/AVP/TCP;interleaved=4-5"
            ),
            Some(4)
        );
        assert_eq!(tcp_interleaved_channel("RTP/AVP/TCP;unicast"), Some(0));
        assert_eq!(
            tcp_interleaved_channel("RTP/AVP;unicast;client_port=5000-5001"),
            None
        );
        assert_eq!(tcp_interleaved_channel("RTP/AVP/TCP;interleaved=255"), None);
    }
}
