//! Session descriptions (RFC 4566) for DESCRIBE: one video medium with the H.264 (RFC 6184
//! §8.1) or H.265 (RFC 7798 §7.1) format parameters carrying the clip's parameter sets, then
//! the camera's audio medium if it has one.

use std::fmt::Write as _;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;

use super::audio::AudioClip;
use super::clip::Clip;
use super::mp4::VideoCodec;

/// Dynamic RTP payload type used for video.
pub(crate) const PAYLOAD_TYPE: u8 = 96;
/// Control URL of the (only) track, relative to the Content-Base.
pub(crate) const TRACK_CONTROL: &str = "trackID=0";

/// The SDP of camera `camera` serving `clip` (and `audio`); `session_id` fills the `o=` line.
pub(crate) fn describe(
    camera: u32,
    clip: &Clip,
    audio: Option<&AudioClip>,
    session_id: u64,
) -> String {
    let mut s = String::with_capacity(512);
    let _ = write!(
        s,
        "v=0\r\n\
         o=- {session_id} 1 IN IP4 127.0.0.1\r\n\
         s=understudy camsim camera {camera}\r\n\
         t=0 0\r\n\
         a=range:npt=now-\r\n\
         m=video 0 RTP/AVP {PAYLOAD_TYPE}\r\n\
         c=IN IP4 0.0.0.0\r\n\
         a=rtpmap:{PAYLOAD_TYPE} {}/90000\r\n\
         a=fmtp:{PAYLOAD_TYPE} {}\r\n\
         a=framerate:{}\r\n\
         a=control:{TRACK_CONTROL}\r\n",
        clip.codec.encoding_name(),
        fmtp(clip),
        format_rate(clip.frame_rate()),
    );
    if let Some(a) = audio {
        s.push_str(&a.sdp_media());
    }
    s
}

fn format_rate(r: f64) -> String {
    let s = format!("{r:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

fn fmtp(clip: &Clip) -> String {
    let p = &clip.params;
    match clip.codec {
        VideoCodec::H264 => {
            // profile-level-id: profile_idc, constraint flags, level_idc = SPS bytes 1..4.
            let pli = p
                .sps
                .get(1..4)
                .map(|b| format!("{:02X}{:02X}{:02X}", b[0], b[1], b[2]))
                .unwrap_or_else(|| "42E01F".to_string());
            format!(
                "packetization-mode=1;profile-level-id={pli};sprop-parameter-sets={},{}",
                B64.encode(&p.sps),
                B64.encode(&p.pps)
            )
        }
        VideoCodec::H265 => {
            let vps = p.vps.as_deref().unwrap_or_default();
            format!(
                "sprop-vps={};sprop-sps={};sprop-pps={}",
                B64.encode(vps),
                B64.encode(&p.sps),
                B64.encode(&p.pps)
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn sdp_for_both_codecs() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
        let h264 = Clip::load(&dir.join("h264-360p25-small.mp4")).unwrap();
        let s = describe(3, &h264, None, 42);
        assert!(s.contains("a=rtpmap:96 H264/90000\r\n"), "{s}");
        assert!(
            s.contains("a=fmtp:96 packetization-mode=1;profile-level-id=4D"),
            "{s}"
        );
        assert!(s.contains(&format!(
            "sprop-parameter-sets={},",
            B64.encode(&h264.params.sps)
        )));
        assert!(s.contains("a=framerate:25\r\n") && s.contains("a=control:trackID=0\r\n"));
        let h265 = Clip::load(&dir.join("h265-360p25-small.mp4")).unwrap();
        let s = describe(1, &h265, None, 42);
        assert!(s.contains("a=rtpmap:96 H265/90000\r\n"), "{s}");
        assert!(
            s.contains("a=fmtp:96 sprop-vps=") && s.contains(";sprop-pps="),
            "{s}"
        );
        assert!(!s.contains("m=audio"));
        let aac = AudioClip::load(&dir.join("audio-aac-16k.mp4")).unwrap().unwrap();
        let s = describe(1, &h265, Some(&aac), 42);
        let audio_at = s.find("m=audio 0 RTP/AVP 97\r\n").expect("audio medium");
        assert!(s.find("m=video").unwrap() < audio_at, "{s}");
        assert!(s[audio_at..].contains("a=control:trackID=1\r\n"), "{s}");
    }
}
