//! A segment file being written, shared by its channel's writer (which appends whole
//! fragments) and its volume's syncer (which makes them durable and catalogs them).
//!
//! Two small state machines, both under one mutex:
//! - the writer's side: `Writing` → `Done` (closed normally) or `Failed` (write error);
//! - the syncer's side: `Uncataloged` → `Cataloged` → `Settled` (row final or file discarded).
//!
//! A second lock, the append gate, orders the writer's appends against the syncer giving up
//! on the file: the writer checks `sync_failed` and writes under it, and the syncer marks the
//! segment failed and cuts the file back (or removes it) under it. So once the syncer has
//! abandoned a segment, no fragment lands beyond its cut: the file never holds more than the
//! catalog lists.

use std::fs::File;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Instant;

use crate::catalog::index;
use crate::fmp4::FragmentInfo;
use crate::stats::DurableStats;
use crate::track::TrackParams;

/// How far a segment has been written (or made durable): whole fragments only.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Progress {
    /// File length covered (init segment plus complete fragments).
    pub bytes: u64,
    pub frames: u64,
    /// End of the last fragment, 90 kHz from the segment start.
    pub end_rel_90k: u64,
    pub fragments: u32,
    /// The catalog's fragment index blob for these fragments.
    pub index: Vec<u8>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WriterPhase {
    /// The writer may append more fragments.
    Writing,
    /// The writer closed the segment; nothing more will be appended.
    Done,
    /// A write failed; the file was cut back to `written` (best effort) and is abandoned.
    Failed,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum SyncPhase {
    /// Not in the catalog yet (no durable fragment, or its directory entries are not durable).
    Uncataloged,
    /// A row exists (id) and reflects `durable`.
    Cataloged { id: i64, durable: Progress },
    /// Nothing more to do: the row is final (open = 0), or the file was discarded.
    Settled,
}

#[derive(Debug)]
struct State {
    written: Progress,
    writer: WriterPhase,
    sync: SyncPhase,
}

/// A consistent view taken by the syncer at the start of its work on a segment.
#[derive(Clone, Debug)]
pub(crate) struct Snapshot {
    pub written: Progress,
    pub writer: WriterPhase,
    pub sync: SyncPhase,
}

pub(crate) struct ActiveSegment {
    pub channel: u32,
    /// Relative to the volume, as cataloged.
    pub rel_path: String,
    pub abs_path: PathBuf,
    pub start_90k: i64,
    pub params: Arc<TrackParams>,
    pub file: File,
    /// Directories whose entries must be durable before the row is inserted (the file's
    /// parent, plus the parents of any directory created for it).
    pub dirs_to_sync: Vec<PathBuf>,
    pub stats: Arc<DurableStats>,
    /// Takeover footage (a main's camera) rather than this box's own.
    pub takeover: bool,
    /// The span the segment was opened in (the binary's channel span: channel, main, camera;
    /// opaque here). The syncer logs about the segment inside it, so those lines carry the
    /// same fields as the writer's.
    pub span: tracing::Span,
    /// Set by the syncer when an fsync failed: the writer must move on to a new segment.
    sync_failed: AtomicBool,
    /// Held by the writer across its `sync_failed` check and the write, and by the syncer
    /// while it marks the segment failed and cuts or removes the file (see the module docs).
    append: Mutex<()>,
    state: Mutex<State>,
    settled: Condvar,
}

impl ActiveSegment {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        channel: u32,
        rel_path: String,
        abs_path: PathBuf,
        start_90k: i64,
        params: Arc<TrackParams>,
        file: File,
        init_len: u64,
        dirs_to_sync: Vec<PathBuf>,
        stats: Arc<DurableStats>,
        takeover: bool,
    ) -> Self {
        ActiveSegment {
            channel,
            rel_path,
            abs_path,
            start_90k,
            params,
            file,
            dirs_to_sync,
            stats,
            takeover,
            span: tracing::Span::current(),
            sync_failed: AtomicBool::new(false),
            append: Mutex::new(()),
            state: Mutex::new(State {
                written: Progress {
                    bytes: init_len,
                    ..Progress::default()
                },
                writer: WriterPhase::Writing,
                sync: SyncPhase::Uncataloged,
            }),
            settled: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    // ---- writer side ----

    /// Bytes written so far (where the next fragment goes).
    pub fn written_bytes(&self) -> u64 {
        self.lock().written.bytes
    }

    /// Records a fragment the writer has written completely.
    pub fn record_fragment(&self, frag: &FragmentInfo) {
        let mut st = self.lock();
        let w = &mut st.written;
        index::push(&mut w.index, frag);
        w.bytes = frag.offset + frag.len;
        w.frames += u64::from(frag.samples);
        w.end_rel_90k = frag.base_time + frag.duration;
        w.fragments += 1;
    }

    /// The writer will append nothing more.
    pub fn finish(&self) {
        let mut st = self.lock();
        if st.writer == WriterPhase::Writing {
            st.writer = WriterPhase::Done;
        }
    }

    /// Held across the writer's `sync_failed` check and its write (and the ENOSPC rewind), so
    /// the syncer cannot abandon the file in between.
    pub fn append_gate(&self) -> MutexGuard<'_, ()> {
        self.append.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A write failed: cut the torn tail off (best effort; start-up repair covers a failure
    /// here) and abandon the segment. Returns the bytes cut. Must not be called with the
    /// append gate held. If the syncer has abandoned the file meanwhile, its cut stands.
    pub fn fail_by_writer(&self) -> u64 {
        let _gate = self.append_gate();
        if self.sync_failed() {
            self.lock().writer = WriterPhase::Failed;
            return 0;
        }
        let written = {
            let mut st = self.lock();
            st.writer = WriterPhase::Failed;
            st.written.bytes
        };
        let len = self.file.metadata().map(|m| m.len()).unwrap_or(written);
        if let Err(e) = self.file.set_len(written) {
            tracing::warn!(channel = self.channel, path = %self.abs_path.display(), error = %e,
                "could not cut a failed write off the segment; start-up repair will");
        }
        len.saturating_sub(written)
    }

    /// True once the syncer has given up on this file (fsync error).
    pub fn sync_failed(&self) -> bool {
        self.sync_failed.load(Ordering::Acquire)
    }

    /// Waits until the syncer has settled the segment, up to `deadline`. True if settled.
    pub fn wait_settled(&self, deadline: Instant) -> bool {
        let mut st = self.lock();
        loop {
            if st.sync == SyncPhase::Settled {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            st = match self.settled.wait_timeout(st, deadline - now) {
                Ok((g, _)) => g,
                Err(p) => p.into_inner().0,
            };
        }
    }

    /// The writer will append nothing more (closed or failed).
    pub fn is_closed(&self) -> bool {
        self.lock().writer != WriterPhase::Writing
    }

    pub fn is_settled(&self) -> bool {
        self.lock().sync == SyncPhase::Settled
    }

    // ---- syncer side ----

    pub fn snapshot(&self) -> Snapshot {
        let st = self.lock();
        Snapshot {
            written: st.written.clone(),
            writer: st.writer,
            sync: st.sync.clone(),
        }
    }

    /// Records the outcome of a committed sync round.
    pub fn set_sync(&self, phase: SyncPhase) {
        let mut st = self.lock();
        let settled = phase == SyncPhase::Settled;
        st.sync = phase;
        drop(st);
        if settled {
            self.settled.notify_all();
        }
    }

    /// The syncer gives up on the file (failed fsync, volume gone): once this returns, the
    /// writer appends nothing more. The returned gate keeps it so while the caller cuts the
    /// file back to its durable length or removes it.
    pub fn stop_writer(&self) -> MutexGuard<'_, ()> {
        let gate = self.append_gate();
        self.sync_failed.store(true, Ordering::Release);
        gate
    }
}
