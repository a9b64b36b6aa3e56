//! One recording channel end to end: a camera's ingest task (recorder crate) feeding, through a
//! bounded queue, a writer thread that hands frames to the store (storage crate).
//!
//! The queue is the only link between the two crates. Ingest never blocks on it (it drops whole
//! GOPs when it is full, see `understudy_recorder`), so a slow disk can't stall the network side
//! or any other channel; the writer thread does blocking file IO and never touches the network.

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn, Instrument};
use understudy_recorder::{AudioParams, ChannelHandle, ChannelSnapshot, ChannelSpec, Credentials, IngestItem, VideoParams};
use understudy_storage::telemetry::Heartbeat;
use understudy_storage::{ChannelWriter, DurableStats, InputAudio, InputFrame, Store, TrackParams};

use crate::config;
use crate::failover::Handoff;
use crate::station::StationError;

/// Bitrate assumed for volume placement before a channel has measured its own.
const EXPECTED_BITRATE_BPS: u64 = 4_000_000;

/// A camera being recorded onto a channel.
pub struct RecordingChannel {
    pub channel: u32,
    pub camera: String,
    /// The main's own channel number for a takeover camera; the channel itself for a local one.
    pub source_channel: u32,
    /// The main whose camera this is, or `local`.
    pub owner: String,
    /// Beats each time the writer thread goes round its loop (the systemd watchdog reads it).
    pub writer_heartbeat: Arc<Heartbeat>,
    ingest: ChannelHandle,
    writer: std::thread::JoinHandle<()>,
    durable: Arc<DurableStats>,
    /// `channel` span (channel, main, camera) its ingest task and writer thread log in.
    span: tracing::Span,
}

impl RecordingChannel {
    /// Starts ingest and the writer thread for `cam`. Must be called inside a tokio runtime.
    /// `takeover`: the camera is a main's (its footage is protected from retention longer).
    pub fn start(store: &Store, cam: &config::Camera, server: &config::Server, takeover: bool, shutdown: CancellationToken) -> Result<Self, StationError> {
        Self::start_with(store, cam, server, takeover, shutdown, || None)
    }

    /// As `start`, or, given a standby session (`handoff`), records that session instead of
    /// opening one: its held frames first, then its queue, then what it receives next.
    /// `handoff` is called once the channel's writer is made, so a channel that cannot be
    /// opened leaves the standby session alone.
    pub fn start_with(store: &Store, cam: &config::Camera, server: &config::Server, takeover: bool, shutdown: CancellationToken, handoff: impl FnOnce() -> Option<Handoff>) -> Result<Self, StationError> {
        let mut writer = store.channel_writer(cam.channel, EXPECTED_BITRATE_BPS)?;
        writer.set_takeover(takeover);
        let durable = writer.stats();
        let (ingest, rx, held, span) = match handoff() {
            Some(Handoff { session: Some((ingest, rx)), held, span }) => (ingest, rx, held, span),
            other => {
                let (held, span) = match other {
                    Some(h) => (h.held, h.span),
                    // Every line logged for this channel (ingest task, writer thread) carries these fields.
                    None => (Vec::new(), tracing::info_span!("channel", channel = cam.channel, main = %cam.owner, camera = %cam.label)),
                };
                let spec = channel_spec(cam, server);
                let (tx, rx) = mpsc::channel(spec.queue_frames);
                let ingest = span.in_scope(|| understudy_recorder::spawn_channel(spec, tx, shutdown));
                (ingest, rx, held, span)
            }
        };
        let (channel, camera) = (cam.channel, cam.label.clone());
        let thread_camera = camera.clone();
        let thread_span = span.clone();
        let writer_heartbeat = Arc::new(Heartbeat::default());
        let beat = writer_heartbeat.clone();
        let held_frames = held.iter().filter(|i| matches!(i, IngestItem::Frame(_))).count();
        let spawned = std::thread::Builder::new().name(format!("ch{channel:03}-writer")).spawn({
            let store = store.clone();
            move || thread_span.in_scope(|| writer_loop(held, rx, writer, &store, channel, &thread_camera, &beat))
        });
        let writer = match spawned {
            Ok(w) => w,
            Err(source) => {
                // The session (a standby's or a fresh one) must not linger unrecorded: stop it.
                span.in_scope(|| warn!(error = %source, held_frames, "cannot start the writer thread: session stopped, its held footage lost"));
                tokio::spawn(ingest.stop().instrument(span));
                return Err(StationError::Thread { channel, source });
            }
        };
        span.in_scope(|| info!(url = %cam.url, "channel started"));
        Ok(RecordingChannel { channel, camera, source_channel: cam.source_channel, owner: cam.owner.clone(), writer_heartbeat, ingest, writer, durable, span })
    }

    pub fn snapshot(&self) -> ChannelSnapshot {
        self.ingest.stats.snapshot()
    }

    pub fn durable(&self) -> &Arc<DurableStats> {
        &self.durable
    }

    /// The `channel` span (channel, main, camera): lines about this channel are logged in it.
    pub fn span(&self) -> &tracing::Span {
        &self.span
    }

    /// Stops ingest (TEARDOWN), then waits for the writer to flush and close its segment.
    pub async fn stop(self) {
        let RecordingChannel { ingest, writer, span, .. } = self;
        ingest.stop().instrument(span.clone()).await;
        // The ingest task dropped its sender: the writer drains the queue, closes and exits.
        let joined = tokio::task::spawn_blocking(move || writer.join()).await;
        let _in_span = span.enter();
        match joined {
            Ok(Ok(())) => info!("channel stopped"),
            _ => warn!("writer thread panicked while stopping"),
        }
    }
}

/// The recorder's view of a configured camera.
pub fn channel_spec(cam: &config::Camera, server: &config::Server) -> ChannelSpec {
    let credentials = cam.username.as_ref().map(|u| Credentials {
        username: u.clone(),
        password: cam.password.as_ref().map(|p| p.expose().to_owned()).unwrap_or_default(),
    });
    let mut spec = ChannelSpec::new(cam.channel, cam.label.clone(), cam.url.clone());
    spec.credentials = credentials;
    spec.transport = match cam.transport {
        config::Transport::Tcp => understudy_recorder::TransportPolicy::Tcp,
        config::Transport::Udp => understudy_recorder::TransportPolicy::Udp,
    };
    spec.stall_timeout = server.stall_timeout;
    spec.audio = cam.audio;
    spec
}

fn track_params(v: &VideoParams, a: Option<&AudioParams>) -> TrackParams {
    TrackParams {
        codec: v.rfc6381.clone(),
        width: v.width,
        height: v.height,
        sample_entry: v.sample_entry.clone(),
        audio: a.map(|a| understudy_storage::AudioParams {
            codec: a.codec.to_owned(),
            sample_rate: a.sample_rate,
            sample_entry: a.sample_entry.clone(),
        }),
    }
}

/// The recorder's parameter `Arc`s a storage `TrackParams` was made from.
type ParamsKey = (Arc<VideoParams>, Option<Arc<AudioParams>>);

fn same_key(k: &ParamsKey, v: &Arc<VideoParams>, a: &Option<Arc<AudioParams>>) -> bool {
    Arc::ptr_eq(&k.0, v)
        && match (&k.1, a) {
            (Some(x), Some(y)) => Arc::ptr_eq(x, y),
            (None, None) => true,
            _ => false,
        }
}

/// How often the writer thread drains its queue. It polls instead of blocking on the queue:
/// a blocked receiver costs a futex wake-up and two context switches for every frame (perf:
/// about 30 % of the recorder's CPU at 100 channels × 25 fps), while a poll every 100 ms costs
/// one timer wake-up for a batch. Fragments hold ≥ 1 s of media, so the delay is invisible in
/// durability; the queue holds ~10 s, so it cannot fill in 100 ms.
const DRAIN_EVERY: std::time::Duration = std::time::Duration::from_millis(100);

/// How far past the newest held frame the channel's last recorded end may lie for the held
/// footage to be cut at it. Further than that the clock stepped back: cutting would hold back the
/// live stream too, so nothing is cut (and the log says why).
const CUT_REACH_90K: i64 = 5 * 90_000;

/// Where the footage a standby held (`held`) must start on `channel`: the end of what the
/// channel already holds, when that lies after the first held frame. A waiting main's buffer
/// reaches `prebuffer` back, into time another main's takeover recorded on these channels; an
/// overlapping segment would not play (export skips a segment that overlaps the one before).
fn held_cut(held: &[IngestItem], store: &Store, channel: u32) -> Option<i64> {
    let mut times = held.iter().filter_map(|i| match i {
        IngestItem::Frame(f) => Some(f.time_90k),
        _ => None,
    });
    let first = times.next()?;
    let last = times.last().unwrap_or(first);
    let end = match store.recordings(channel, Some(first), None) {
        Ok(rows) => rows.iter().map(|r| r.end_90k).max()?,
        Err(e) => {
            warn!(error = %e, "cannot read the channel's last recorded end: held footage written as it is");
            return None;
        }
    };
    if end <= first {
        return None;
    }
    if end > last + CUT_REACH_90K {
        warn!(recorded_end_90k = end, newest_held_90k = last, "the channel holds footage later than the standby's newest frame (clock stepped back?): held footage written as it is");
        return None;
    }
    Some(end)
}

/// Drops what comes before `not_before` on a channel: frames and audio until a key frame at or
/// after that instant, so the run starts with a whole GOP where the channel's footage ended.
struct Cut {
    not_before: Option<i64>,
    dropped_frames: u64,
}

impl Cut {
    /// Whether `item` is to be written.
    fn keeps(&mut self, item: &IngestItem) -> bool {
        let Some(t) = self.not_before else { return true };
        match item {
            IngestItem::Frame(f) if f.key && f.time_90k >= t => {
                self.not_before = None;
                info!(dropped_frames = self.dropped_frames, from_90k = f.time_90k, "held footage cut at the channel's last recorded end");
                true
            }
            IngestItem::Frame(_) => {
                self.dropped_frames += 1;
                false
            }
            IngestItem::Audio(_) => false,
            IngestItem::SessionEnded | IngestItem::Reanchored { .. } => true,
        }
    }
}

/// The writer thread: writes the `held` items (a hot standby's prebuffer), then pops frames and
/// writes them until the queue closes. Held footage reaching back into time the channel already
/// holds (another main's takeover on shared channels) is cut at a key frame after that.
fn writer_loop(held: Vec<IngestItem>, mut rx: mpsc::Receiver<IngestItem>, mut writer: ChannelWriter, store: &Store, channel: u32, camera: &str, heartbeat: &Heartbeat) {
    use tokio::sync::mpsc::error::TryRecvError;
    // The recorder hands the same `Arc`s until parameters change; map them once.
    let mut params: Option<(ParamsKey, Arc<TrackParams>)> = None;
    let mut cut = Cut { not_before: held_cut(&held, store, channel), dropped_frames: 0 };
    let mut held = held.into_iter();
    loop {
        heartbeat.beat();
        let item = match held.next().map_or_else(|| rx.try_recv(), Ok) {
            Ok(item) => item,
            Err(TryRecvError::Empty) => {
                std::thread::sleep(DRAIN_EVERY);
                continue;
            }
            Err(TryRecvError::Disconnected) => break,
        };
        if !cut.keeps(&item) {
            continue;
        }
        let result = match item {
            IngestItem::Frame(f) => {
                let tp = match &params {
                    Some((k, t)) if same_key(k, &f.params, &f.audio) => t.clone(),
                    _ => {
                        let t = Arc::new(track_params(&f.params, f.audio.as_deref()));
                        params = Some(((f.params.clone(), f.audio.clone()), t.clone()));
                        t
                    }
                };
                writer.push(&tp, InputFrame { time_90k: f.time_90k, cts_offset: f.cts_offset, key: f.key, data: f.data })
            }
            IngestItem::Audio(a) => {
                writer.push_audio(InputAudio { time_90k: a.time_90k, samples: a.samples, data: a.data });
                Ok(())
            }
            IngestItem::SessionEnded => writer.end_run(),
            IngestItem::Reanchored { error_ms } => {
                let detail = serde_json::json!({ "camera": camera, "error_ms": error_ms });
                if let Err(e) = store.add_event("time_reanchored", None, Some(channel), &detail) {
                    warn!(channel, camera, error = %e, "could not record the re-anchor event");
                }
                Ok(())
            }
        };
        if let Err(e) = result {
            // The store already closed the segment and will open a new one; say so and go on.
            warn!(channel, camera, error = %e, "write failed");
        }
    }
    if let Err(e) = writer.close() {
        warn!(channel, camera, error = %e, "closing the channel's last segment failed");
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use understudy_recorder::{Codec, Frame};

    use super::*;

    fn frame(time_90k: i64, key: bool) -> IngestItem {
        let params = Arc::new(VideoParams {
            codec: Codec::H264, rfc6381: "avc1.640028".into(), width: 16, height: 16, sample_entry: Bytes::new(), sps: None, frame_90k: None,
        });
        IngestItem::Frame(Frame { time_90k, key, data: Bytes::from_static(&[0]), params, loss: 0, cts_offset: 0, audio: None })
    }

    #[test]
    fn the_cut_starts_at_the_first_key_frame_at_or_after_the_end() {
        // Key frames at 0, 10, 20 (× 3600); the channel's footage ends at 10.5: GOPs 0 and 10
        // start before it and go whole, the run starts at the key frame 20.
        let items: Vec<IngestItem> = (0..30).map(|i| frame(i * 3600, i % 10 == 0)).collect();
        let mut cut = Cut { not_before: Some(10 * 3600 + 1800), dropped_frames: 0 };
        let kept: Vec<i64> = items.iter().filter(|i| cut.keeps(i)).map(|i| match i { IngestItem::Frame(f) => f.time_90k / 3600, _ => -1 }).collect();
        assert_eq!(kept, (20..30).collect::<Vec<_>>());
        assert_eq!(cut.dropped_frames, 20);
        // A key frame exactly at the end is kept; nothing to cut keeps everything.
        let mut at = Cut { not_before: Some(10 * 3600), dropped_frames: 0 };
        assert_eq!(items.iter().filter(|i| at.keeps(i)).count(), 20);
        let mut none = Cut { not_before: None, dropped_frames: 0 };
        assert_eq!(items.iter().filter(|i| none.keeps(i)).count(), 30);
    }
}
