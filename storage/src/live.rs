//! Live fragments: each channel writer publishes every fragment it has written (before it is
//! durable) to a bounded per-channel broadcast that live viewers subscribe to.
//!
//! Recording never waits for a viewer: publishing is a non-blocking send into a ring of
//! `CAPACITY` fragments (nothing at all happens while nobody watches); a viewer that falls
//! behind loses the oldest and is told so (`Lagged`), and must then skip to the next fragment
//! that starts with a key frame. A new viewer gets the fragments since the last key-started
//! one at once, so its picture starts without waiting for the next key frame.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use tokio::sync::broadcast;

use crate::fmp4::patch::{retime, tracks_of, Retime, TrackInfo};
use crate::track::TrackParams;

/// Fragments a viewer may fall behind before it loses some.
pub const CAPACITY: usize = 64;
/// At most this many fragments are kept for a new viewer (a stream with no key frame for
/// longer keeps none).
const MAX_GOP: usize = 128;

/// The init segment (`ftyp` + `moov`) live fragments of one segment file go with.
#[derive(Debug)]
pub struct LiveInit {
    pub params: Arc<TrackParams>,
    pub init: Bytes,
    tracks: Vec<TrackInfo>,
}

impl LiveInit {
    pub(crate) fn new(params: &Arc<TrackParams>, init: &[u8]) -> Result<LiveInit, String> {
        Ok(LiveInit { params: Arc::clone(params), init: Bytes::copy_from_slice(init), tracks: tracks_of(init)? })
    }

    /// The MSE type of the tracks, e.g. `video/mp4; codecs="avc1.64001F,mp4a.40.2"`.
    pub fn mime(&self) -> String {
        let mut codecs = self.params.codec.clone();
        if let Some(a) = &self.params.audio {
            codecs.push(',');
            codecs.push_str(match a.codec.as_str() {
                "aac" => "mp4a.40.2",
                "flac" => "flac",
                other => other,
            });
        }
        format!("video/mp4; codecs=\"{codecs}\"")
    }
}

/// One written fragment (`moof` + `mdat`) of a channel.
#[derive(Debug)]
pub struct LiveFragment {
    pub init: Arc<LiveInit>,
    /// Wall-clock time of its first frame, 90 kHz units since the Unix epoch.
    pub start_90k: i64,
    pub duration_90k: u64,
    pub starts_with_key: bool,
    /// `moof` and `mdat` header as written (decode times from the segment file's start).
    header: Bytes,
    data: Vec<Bytes>,
    /// Absolute time of the segment file's media time 0.
    file_start_90k: i64,
}

impl LiveFragment {
    pub(crate) fn new(
        init: &Arc<LiveInit>,
        file_start_90k: i64,
        frag: &crate::fmp4::Fragment,
    ) -> LiveFragment {
        LiveFragment {
            init: Arc::clone(init),
            start_90k: file_start_90k.saturating_add(i64::try_from(frag.base_time).unwrap_or(i64::MAX)),
            duration_90k: frag.duration,
            starts_with_key: frag.starts_with_key,
            header: Bytes::copy_from_slice(&frag.header),
            data: frag.data.clone(),
            file_start_90k,
        }
    }

    /// The fragment's bytes with its decode times moved onto a viewer's timeline, which starts
    /// at `origin_90k` (absolute): continuous across segment files whatever their start.
    pub fn bytes(&self, origin_90k: i64, sequence: u32) -> Result<Vec<u8>, String> {
        let len = self.header.len() + self.data.iter().map(Bytes::len).sum::<usize>();
        let mut out = Vec::with_capacity(len);
        out.extend_from_slice(&self.header);
        let moof_len = crate::fmp4::boxes::parse_header(&out).map_err(|p| p.to_string())?.size;
        let moof_len = usize::try_from(moof_len).ok().filter(|&l| l <= out.len()).ok_or("fragment header shorter than its 'moof'")?;
        let shift_90k = self.file_start_90k.saturating_sub(origin_90k);
        retime(&mut out[..moof_len], &self.init.tracks, Retime { sequence, shift_90k, data_moved: 0 })?;
        for d in &self.data {
            out.extend_from_slice(d);
        }
        Ok(out)
    }
}

/// What a new viewer gets: the fragments since the last key-started one (oldest first) and
/// the receiver of everything after them.
pub struct LiveSubscription {
    pub recent: Vec<Arc<LiveFragment>>,
    pub receiver: broadcast::Receiver<Arc<LiveFragment>>,
}

struct ChannelLive {
    sender: broadcast::Sender<Arc<LiveFragment>>,
    gop: Vec<Arc<LiveFragment>>,
}

/// Every channel's live broadcast.
#[derive(Default)]
pub(crate) struct LiveHub {
    channels: Mutex<HashMap<u32, ChannelLive>>,
}

impl LiveHub {
    fn lock(&self) -> MutexGuard<'_, HashMap<u32, ChannelLive>> {
        self.channels.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether `channel` was ever watched (the writer builds nothing for the others). Once
    /// watched, the channel keeps its newest key-started fragments for the next viewer.
    pub fn wanted(&self, channel: u32) -> bool {
        self.lock().contains_key(&channel)
    }

    /// Sends a fragment to `channel`'s viewers; never blocks on them.
    pub fn publish(&self, channel: u32, frag: LiveFragment) {
        let mut all = self.lock();
        let Some(ch) = all.get_mut(&channel) else { return };
        let frag = Arc::new(frag);
        if frag.starts_with_key || ch.gop.len() >= MAX_GOP {
            ch.gop.clear();
        }
        // Kept only after a key-started fragment: a new viewer starts at a key frame.
        if frag.starts_with_key || !ch.gop.is_empty() {
            ch.gop.push(Arc::clone(&frag));
        }
        // Err only when no receiver is left: nothing to do.
        let _ = ch.sender.send(frag);
    }

    /// A run ended (segment closed without a successor yet): a new viewer must not start
    /// from fragments of the old one.
    pub fn end_run(&self, channel: u32) {
        if let Some(ch) = self.lock().get_mut(&channel) {
            ch.gop.clear();
        }
    }

    pub fn subscribe(&self, channel: u32) -> LiveSubscription {
        let mut all = self.lock();
        let ch = all.entry(channel).or_insert_with(|| ChannelLive { sender: broadcast::channel(CAPACITY).0, gop: Vec::new() });
        LiveSubscription { recent: ch.gop.clone(), receiver: ch.sender.subscribe() }
    }
}
