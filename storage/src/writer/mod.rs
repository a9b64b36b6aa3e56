//! `ChannelWriter`: one channel's frames into segment files, owned by that channel's writer
//! thread. Fragments are written whole as the muxer emits them; the volume's syncer makes
//! them durable and catalogs them (see `syncer`).

mod open;

use std::collections::VecDeque;
use std::io::{IoSlice, Seek, SeekFrom};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::fmp4::{Fragment, FragmentInfo, FragmentMuxer};
use crate::fsutil;
use crate::naming::{ms_floor, TICKS_PER_MS};
use crate::segment::ActiveSegment;
use crate::stats::DurableStats;
use crate::store::Shared;
use crate::track::{InputAudio, InputFrame, TrackParams, TIMESCALE};
use crate::volume::Volume;

/// A jump forward larger than this between frames ends the segment (a discontinuity the
/// source didn't report), rather than stretching one frame over the gap.
const MAX_GAP_90K: i64 = 10 * TIMESCALE as i64;
/// Stagger step for the first segment of each channel, so channels don't rotate together.
const STAGGER_STEP_MS: u64 = 7919;

/// The writer's state: waiting for a key frame, or appending to a segment.
enum RunState {
    AwaitingKey,
    Recording(Box<Recording>),
}

struct Recording {
    seg: Arc<ActiveSegment>,
    volume: Arc<Volume>,
    muxer: FragmentMuxer,
    /// Rotate at the first key frame at or after this time.
    rotate_at_90k: i64,
    /// Time of the last frame pushed (the one the muxer holds).
    last_time_90k: i64,
    /// What live viewers need with this segment's fragments (None: the init did not parse).
    live: Option<Arc<crate::live::LiveInit>>,
}

/// Why the current segment must end before this frame.
#[derive(Clone, Copy, Debug)]
enum Cut {
    Rotate,
    ParamsChanged,
    Backwards,
    Gap,
    SyncFailed,
    /// No key frame for so long that the segment would outgrow `MAX_SEGMENT_SPAN_90K`.
    TooLong,
}

/// Writes one channel; see the module docs.
pub struct ChannelWriter {
    shared: Arc<Shared>,
    channel: u32,
    expected_bitrate_bps: u64,
    stats: Arc<DurableStats>,
    state: RunState,
    segments_started: u64,
    current_volume: Option<Arc<Volume>>,
    /// The volume where this channel's last segment failed: tried last next time.
    avoid_volume: Option<Arc<Volume>>,
    /// Closed segments not yet settled by their syncer (what `close` waits for).
    closing: Vec<(Arc<Volume>, Arc<ActiveSegment>)>,
    finished: bool,
    /// Takeover footage (a main's camera): retention deletes local footage first.
    takeover: bool,
    /// Frames of the current segment's muxer not yet written in a fragment (cheap clones),
    /// replayed on another volume if the segment fails.
    in_fragment: Vec<InputFrame>,
    /// Storage errors that keep coming back (see `Repeating`), one per volume and error.
    repeating: Vec<Repeating>,
}

/// A storage error that keeps coming back on one volume while the channel cannot record (a
/// full disk with nothing closed to delete, a failing disk): each key frame tries to start a
/// segment again and fails the same way. It is recorded as one `disk_error` event when it
/// starts and one `disk_error_ended` event (with how often it recurred) once this channel's
/// footage is written again, not as one event per key frame.
struct Repeating {
    volume: Arc<Volume>,
    /// The error's errno (or kind, for errors without one): what makes it "the same".
    key: (Option<i32>, std::io::ErrorKind),
    op: String,
    error: String,
    since: Instant,
    /// Occurrences after the first (not recorded as events).
    repeats: u64,
}

/// How many times a fragment that hit ENOSPC is retried after retention made room.
const FULL_RETRIES: usize = 3;

impl ChannelWriter {
    pub(crate) fn new(shared: Arc<Shared>, channel: u32, expected_bitrate_bps: u64) -> Self {
        ChannelWriter {
            shared,
            channel,
            expected_bitrate_bps,
            stats: Arc::new(DurableStats::default()),
            state: RunState::AwaitingKey,
            segments_started: 0,
            current_volume: None,
            avoid_volume: None,
            closing: Vec::new(),
            finished: false,
            takeover: false,
            in_fragment: Vec::new(),
            repeating: Vec::new(),
        }
    }

    /// Marks what this writer records as takeover footage (a main's camera), which retention
    /// deletes after the box's own cameras' footage. Applies from the next segment.
    pub fn set_takeover(&mut self, takeover: bool) {
        self.takeover = takeover;
    }

    pub fn stats(&self) -> Arc<DurableStats> {
        Arc::clone(&self.stats)
    }

    /// Records one frame. Frames before the first key frame of a run are dropped (counted).
    /// Errs only when no volume can take a new segment (the frame is dropped) or after
    /// shutdown; write errors inside a segment are handled here (event, new segment).
    ///
    /// When a segment fails (write error, failed fsync, volume gone), the frames not yet on
    /// disk (the failed fragment, or those the muxer holds) are replayed into a new segment on
    /// another volume if they start at a key frame, so the channel moves at once instead of
    /// waiting for the next key frame.
    pub fn push(&mut self, params: &Arc<TrackParams>, frame: InputFrame) -> Result<()> {
        if self.shared.is_shut_down() {
            return Err(Error::ShutDown);
        }
        let mut frames = VecDeque::new();
        if let RunState::Recording(rec) = &self.state {
            if let Some(cut) = cut_reason(rec, params, &frame) {
                if !matches!(cut, Cut::Rotate) {
                    tracing::info!(channel = self.channel, reason = ?cut, path = %rec.seg.abs_path.display(), "ending segment early");
                }
                if matches!(cut, Cut::SyncFailed) {
                    frames.extend(std::mem::take(&mut self.in_fragment));
                }
                let next = matches!(cut, Cut::Rotate).then_some(frame.time_90k);
                self.close_segment(next, matches!(cut, Cut::SyncFailed));
            }
        }
        frames.push_back(frame);
        self.push_frames(params, frames)
    }

    fn push_frames(&mut self, params: &Arc<TrackParams>, mut frames: VecDeque<InputFrame>) -> Result<()> {
        // At most twice: a fragment whose write fails is replayed once on another volume.
        let mut replays = 0;
        while let Some(frame) = frames.pop_front() {
            if matches!(self.state, RunState::AwaitingKey) {
                if !frame.key {
                    self.stats.add_dropped(1);
                    continue;
                }
                if let Err(e) = self.open_segment(params, frame.time_90k) {
                    self.stats.add_dropped(1 + frames.len() as u64);
                    return Err(e);
                }
                self.in_fragment.clear();
            }
            let RunState::Recording(rec) = &mut self.state else {
                continue;
            };
            rec.last_time_90k = frame.time_90k;
            let rel = frame.time_90k.saturating_sub(rec.seg.start_90k);
            let Some(frag) = rec.muxer.push_sample(rel, frame.cts_offset, frame.key, frame.data.clone()) else {
                self.in_fragment.push(frame);
                continue;
            };
            let written = std::mem::replace(&mut self.in_fragment, vec![frame]);
            self.write_fragment(frag);
            if matches!(self.state, RunState::AwaitingKey) && replays < 2 {
                replays += 1;
                let held = std::mem::take(&mut self.in_fragment);
                for f in held.into_iter().rev().chain(written.into_iter().rev()) {
                    frames.push_front(f);
                }
            }
        }
        Ok(())
    }

    /// Records one audio frame into the current segment, beside the video it goes with. Audio
    /// never opens or closes a segment: it is dropped while no segment is open, when the
    /// segment was started without audio, or when it is older than the segment's start.
    pub fn push_audio(&mut self, audio: InputAudio) {
        let RunState::Recording(rec) = &mut self.state else {
            return;
        };
        let Some(a) = &rec.seg.params.audio else {
            return;
        };
        let rel_90k = audio.time_90k.saturating_sub(rec.seg.start_90k);
        let ticks = i128::from(rel_90k) * i128::from(a.sample_rate) / i128::from(TIMESCALE);
        if let Ok(ticks) = i64::try_from(ticks) {
            rec.muxer.push_audio(ticks, audio.samples, audio.data);
        }
    }

    /// A source discontinuity: flush the held frame and close the segment. The next push
    /// starts a new segment (at a key frame).
    pub fn end_run(&mut self) -> Result<()> {
        self.close_segment(None, false);
        Ok(())
    }

    /// Ends the run, then waits (bounded) until everything written is durable and cataloged.
    pub fn close(mut self) -> Result<()> {
        self.close_segment(None, false);
        self.finished = true;
        let pending = std::mem::take(&mut self.closing);
        if pending.iter().all(|(_, s)| s.is_settled()) {
            return Ok(());
        }
        if self.shared.is_shut_down() {
            return Err(Error::ShutDown);
        }
        for (v, _) in &pending {
            v.kick();
        }
        let wait = (self.shared.cfg.sync_interval * 10).max(Duration::from_secs(30));
        let started = Instant::now();
        let deadline = started + wait;
        let unsettled = pending
            .iter()
            .filter(|(_, s)| !s.wait_settled(deadline))
            .count();
        if unsettled > 0 {
            return Err(Error::CloseTimeout {
                channel: self.channel,
                pending: unsettled,
                waited_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            });
        }
        Ok(())
    }

    fn open_segment(&mut self, params: &Arc<TrackParams>, time_90k: i64) -> Result<()> {
        let seg_ms = u64::try_from(self.shared.cfg.segment_duration.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        let target_ms = if self.segments_started == 0 {
            seg_ms - (u64::from(self.channel) * STAGGER_STEP_MS) % seg_ms
        } else {
            seg_ms
        };
        let start_ms = ms_floor(time_90k);
        let need = (self.expected_bitrate_bps / 8).saturating_mul(seg_ms) / 1000;
        let init = crate::fmp4::encode_init(params).map_err(|source| Error::Encode {
            path: crate::naming::segment_rel_path(self.channel, start_ms, 0).unwrap_or_default(),
            source,
        })?;
        let candidates = open::placement(
            &self.shared.volumes,
            self.current_volume.as_ref(),
            self.avoid_volume.as_ref(),
            need,
        );
        let mut reasons = Vec::new();
        let mut problems = Vec::new();
        for volume in candidates {
            let mut created = self.create_on(&volume, start_ms, params, &init);
            if matches!(&created, Err(Error::Io { source, .. }) if fsutil::is_full(source)) {
                let freed = self.make_room(&volume, init.len() as u64);
                if freed > 0 {
                    created = self.create_on(&volume, start_ms, params, &init);
                }
            }
            match created {
                Ok(seg) => {
                    if self
                        .current_volume
                        .as_ref()
                        .is_some_and(|c| !Arc::ptr_eq(c, &volume))
                    {
                        tracing::info!(channel = self.channel, volume = %volume.path.display(), "channel moved to another volume");
                    }
                    let frag_90k = u64::try_from(self.shared.cfg.fragment_duration.as_millis())
                        .unwrap_or(u64::MAX)
                        .saturating_mul(TICKS_PER_MS as u64);
                    self.state = RunState::Recording(Box::new(Recording {
                        rotate_at_90k: seg
                            .start_90k
                            .saturating_add((target_ms as i64).saturating_mul(TICKS_PER_MS)),
                        seg,
                        volume: Arc::clone(&volume),
                        muxer: FragmentMuxer::new(frag_90k),
                        last_time_90k: time_90k,
                        live: live_init(self.channel, params, &init),
                    }));
                    if self
                        .avoid_volume
                        .as_ref()
                        .is_some_and(|a| !Arc::ptr_eq(a, &volume))
                    {
                        self.avoid_volume = None;
                    }
                    self.current_volume = Some(volume);
                    self.segments_started += 1;
                    return Ok(());
                }
                Err(e) => {
                    let first = match &e {
                        Error::Io { path, source, op } => self.report_disk_error(&volume, path, op, source),
                        _ => true,
                    };
                    if first {
                        tracing::error!(channel = self.channel, volume = %volume.path.display(), error = %e, "could not start a segment");
                    } else {
                        tracing::debug!(channel = self.channel, volume = %volume.path.display(), error = %e, "could not start a segment (again)");
                    }
                    self.avoid_volume = Some(Arc::clone(&volume));
                    self.stats.add_error();
                    problems.push(problem_text(&volume, &e));
                    reasons.push(e.to_string());
                }
            }
        }
        self.stats.set_problem(Some(if problems.is_empty() {
            "no volume can take a new segment".to_owned()
        } else {
            problems.join("; ")
        }));
        Err(Error::NoVolumeAvailable {
            channel: self.channel,
            reason: reasons.join("; "),
        })
    }

    fn create_on(
        &self,
        volume: &Arc<Volume>,
        start_ms: i64,
        params: &Arc<TrackParams>,
        init: &[u8],
    ) -> Result<Arc<ActiveSegment>> {
        let seg = open::NewSegmentFile {
            channel: self.channel,
            start_ms,
            params,
            init,
            stats: &self.stats,
            takeover: self.takeover,
        };
        open::create_segment(volume, &seg)
    }

    /// ENOSPC on `volume`: retention there, now, for at least `need` bytes. Returns bytes freed.
    fn make_room(&mut self, volume: &Volume, need: u64) -> u64 {
        let protect = self.shared.cfg.protect_takeover;
        let need = need.saturating_mul(4);
        let mut out = crate::retention::make_room(volume, &self.shared.catalog, protect, need);
        if out.bytes == 0 {
            // Closed segments not yet finalized by the syncer can't be deleted yet: ask for a
            // round now, wait (bounded) for them, and try once more.
            let closed: Vec<_> = volume.queued().into_iter().filter(|s| s.is_closed()).collect();
            if !closed.is_empty() {
                volume.kick();
                let deadline = Instant::now() + self.shared.cfg.sync_interval * 2 + Duration::from_secs(1);
                for s in &closed {
                    s.wait_settled(deadline);
                }
                drop(closed);
                // Settled segments this writer still holds keep their files open: on tmpfs
                // (and any filesystem) a deleted file's space returns only once closed.
                self.closing.retain(|(_, s)| !s.is_settled());
                out = crate::retention::make_room(volume, &self.shared.catalog, protect, need);
            }
        }
        if out.bytes > 0 {
            tracing::warn!(channel = self.channel, volume = %volume.path.display(), freed_bytes = out.bytes,
                segments = out.segments, "disk full; retention made room");
        } else {
            tracing::debug!(channel = self.channel, volume = %volume.path.display(), "disk full; nothing closed to delete");
        }
        out.bytes
    }

    /// Ends the current segment, if any. `next_time_90k` (the frame that follows, when
    /// rotating) gives the held frame its exact duration. `abandon` drops what the muxer holds.
    fn close_segment(&mut self, next_time_90k: Option<i64>, abandon: bool) {
        let RunState::Recording(mut rec) =
            std::mem::replace(&mut self.state, RunState::AwaitingKey)
        else {
            return;
        };
        self.in_fragment.clear();
        if abandon {
            self.avoid_volume = Some(Arc::clone(&rec.volume));
        } else {
            let tail = match next_time_90k {
                Some(t) => {
                    let d = u32::try_from(t.saturating_sub(rec.last_time_90k))
                        .unwrap_or(u32::MAX)
                        .max(1);
                    rec.muxer.flush_with_duration(d)
                }
                None => rec.muxer.flush(),
            };
            if let Some(frag) = tail {
                self.state = RunState::Recording(rec);
                self.write_fragment(frag);
                match std::mem::replace(&mut self.state, RunState::AwaitingKey) {
                    RunState::Recording(r) => rec = r,
                    RunState::AwaitingKey => return, // the write failed and closed it
                }
            }
        }
        rec.seg.finish();
        if next_time_90k.is_none() {
            self.shared.live.end_run(self.channel);
        }
        self.closing.retain(|(_, s)| !s.is_settled());
        self.closing.push((rec.volume, rec.seg));
    }

    /// Appends a fragment to the current segment with one vectored write (sample data is not
    /// copied). ENOSPC: retention makes room on the volume at once and the fragment is written
    /// again. Any other error (or no room to make): the segment is abandoned at its last whole
    /// fragment and the channel moves on.
    fn write_fragment(&mut self, frag: Fragment) {
        let RunState::Recording(rec) = &self.state else {
            return;
        };
        let (seg, volume, live) = (Arc::clone(&rec.seg), Arc::clone(&rec.volume), rec.live.clone());
        let offset = seg.written_bytes();
        let mut attempt = 0;
        let result = loop {
            // The check and the write under the append gate: once the syncer has given up on
            // the file (and cut it back), nothing more is written to it.
            let gate = seg.append_gate();
            if seg.sync_failed() {
                return; // the next push notices and moves to a new segment
            }
            let mut slices: Vec<IoSlice<'_>> = Vec::with_capacity(1 + frag.data.len());
            slices.push(IoSlice::new(&frag.header));
            slices.extend(frag.data.iter().map(|d| IoSlice::new(d)));
            match fsutil::write_segment(&seg.file, &seg.abs_path, &mut slices) {
                Err(e) if fsutil::is_full(&e) && attempt < FULL_RETRIES => {
                    attempt += 1;
                    // Back to the end of the last whole fragment, then make room and retry
                    // (without the gate: making room may wait for this volume's syncer).
                    let rewound = seg.file.set_len(offset).and_then(|()| (&seg.file).seek(SeekFrom::Start(offset)));
                    drop(gate);
                    if rewound.is_err() || self.make_room(&volume, frag.len()) == 0 {
                        break Err(e);
                    }
                }
                other => break other,
            }
        };
        match result {
            Ok(()) => {
                let info = FragmentInfo {
                    offset,
                    len: frag.len(),
                    base_time: frag.base_time,
                    duration: frag.duration,
                    samples: u32::try_from(frag.samples.len()).unwrap_or(u32::MAX),
                    starts_with_key: frag.starts_with_key,
                };
                seg.record_fragment(&info);
                if let Some(init) = live.as_ref().filter(|_| self.shared.live.wanted(self.channel)) {
                    let live = crate::live::LiveFragment::new(init, seg.start_90k, &frag);
                    self.shared.live.publish(self.channel, live);
                }
                volume.add_used(info.len);
                self.stats.add_written(u64::from(info.samples));
                self.stats.set_problem(None);
                self.end_disk_errors();
            }
            Err(e) => {
                let RunState::Recording(rec) =
                    std::mem::replace(&mut self.state, RunState::AwaitingKey)
                else {
                    return;
                };
                tracing::error!(channel = self.channel, path = %rec.seg.abs_path.display(), error = %e,
                    "write failed; abandoning the segment at its last whole fragment");
                rec.seg.fail_by_writer();
                self.stats.add_error();
                let e = Error::io("write", &rec.seg.abs_path, e);
                self.stats.set_problem(Some(problem_text(&rec.volume, &e)));
                if let Error::Io { path, source, op } = &e {
                    self.report_disk_error(&rec.volume, path, op, source);
                }
                self.avoid_volume = Some(Arc::clone(&rec.volume));
                self.closing.retain(|(_, s)| !s.is_settled());
                self.closing.push((rec.volume, rec.seg));
            }
        }
    }
}

impl ChannelWriter {
    /// Records a storage error on `volume`: a `disk_error` event the first time, only a count
    /// while the same error keeps coming back (see `Repeating`). Every occurrence still counts
    /// against the volume's health (a full disk never does). True if it was recorded as new.
    fn report_disk_error(&mut self, volume: &Arc<Volume>, path: &std::path::Path, op: &str, e: &std::io::Error) -> bool {
        let key = (e.raw_os_error(), e.kind());
        if let Some(r) = self.repeating.iter_mut().find(|r| Arc::ptr_eq(&r.volume, volume) && r.key == key) {
            r.repeats += 1;
            if !fsutil::is_full(e) {
                volume.record_error();
            }
            return false;
        }
        crate::syncer::disk_error(volume, &self.shared.catalog, Some(self.channel), path, op, e);
        self.repeating.push(Repeating {
            volume: Arc::clone(volume),
            key,
            op: op.to_owned(),
            error: e.to_string(),
            since: Instant::now(),
            repeats: 0,
        });
        true
    }

    /// Footage is being written again: each storage error this channel kept hitting has ended
    /// (one `disk_error_ended` event each, with its count).
    fn end_disk_errors(&mut self) {
        if self.repeating.is_empty() {
            return;
        }
        for r in std::mem::take(&mut self.repeating) {
            let seconds = r.since.elapsed().as_secs_f64();
            tracing::info!(channel = self.channel, volume = %r.volume.path.display(), error = %r.error, repeats = r.repeats,
                seconds, "storage error over: writing again");
            let detail = serde_json::json!({
                "volume": r.volume.path.display().to_string(),
                "op": r.op,
                "error": r.error,
                "repeats": r.repeats,
                "seconds": (seconds * 10.0).round() / 10.0,
            });
            if let Err(err) = self.shared.catalog.add_event("disk_error_ended", None, Some(self.channel), &detail) {
                tracing::error!(channel = self.channel, error = %err, "could not record disk_error_ended event");
            }
        }
    }
}

/// The live view's description of a new segment's init; a failure only costs the live view.
fn live_init(channel: u32, params: &Arc<TrackParams>, init: &[u8]) -> Option<Arc<crate::live::LiveInit>> {
    match crate::live::LiveInit::new(params, init) {
        Ok(i) => Some(Arc::new(i)),
        Err(error) => {
            tracing::warn!(channel, %error, "no live view for this segment: its init segment does not parse");
            None
        }
    }
}

/// The reason a channel's status gives for a storage failure on `volume`.
fn problem_text(volume: &Volume, e: &Error) -> String {
    match e {
        Error::Io { source, .. } if fsutil::is_full(source) => {
            format!("disk full on {}", volume.path.display())
        }
        Error::Io { op, source, .. } => {
            format!("write error on {}: {op}: {source}", volume.path.display())
        }
        other => format!("write error on {}: {other}", volume.path.display()),
    }
}

fn cut_reason(rec: &Recording, params: &Arc<TrackParams>, frame: &InputFrame) -> Option<Cut> {
    if rec.seg.sync_failed() {
        Some(Cut::SyncFailed)
    } else if !Arc::ptr_eq(params, &rec.seg.params) && **params != *rec.seg.params {
        Some(Cut::ParamsChanged)
    } else if frame.time_90k < rec.last_time_90k {
        Some(Cut::Backwards)
    } else if frame.time_90k.saturating_sub(rec.last_time_90k) > MAX_GAP_90K {
        Some(Cut::Gap)
    } else if frame.key && frame.time_90k >= rec.rotate_at_90k {
        Some(Cut::Rotate)
    } else if frame.time_90k.saturating_sub(rec.seg.start_90k) >= crate::catalog::MAX_SEGMENT_SPAN_90K {
        Some(Cut::TooLong)
    } else {
        None
    }
}

impl Drop for ChannelWriter {
    fn drop(&mut self) {
        if !self.finished {
            // Best effort: flush what the muxer holds so the syncer finalizes the segment.
            self.close_segment(None, false);
        }
        self.shared.release_channel(self.channel);
    }
}
