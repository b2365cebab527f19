//! The writer task of one recording: lands each tapped init and segment in the spool (file, then
//! journal record) and hands it to the uploader's plan, retrying a spool it cannot write yet and
//! never writing a segment whose init is not stored.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::Utc;

use super::{off_thread, save_header, update_header, write_entry, Spool, HEADER_FILE};
use crate::hls::segmenter::{InitInfo, Segment};
use crate::record::session::{InitEntry, JournalEntry, Manifest, SegmentEntry};
use crate::record::storage::StorageError;
use crate::record::tap::{TapEvent, TapReceiver};
use crate::record::SessionShared;
use crate::record::LOG_EVERY;
use crate::util::log_throttle::RateLimit;

/// Starts the next part of a recording that reached its longest duration: given the manifest
/// of the part that ends, returns the new part's session (its uploader already running).
pub(in crate::record) type NextPart = Box<dyn FnMut(&Manifest) -> Arc<SessionShared> + Send>;

impl Spool {
    /// The writer task of one recording: lands each tapped init and segment in the spool and
    /// hands it to the uploader's plan. Ends when the tap is dropped.
    #[cfg(test)]
    pub async fn record(
        self: Arc<Self>,
        events: impl Into<TapReceiver>,
        session: Arc<SessionShared>,
    ) {
        self.record_parts(events, session, None).await;
    }

    /// [`Self::record`], rolling over into a new part (a recording of its own, with `continues`
    /// naming the previous one) at the first keyframe segment after `max` of media, so a 24/7
    /// stream's playlist, memory and uploads stay bounded.
    pub async fn record_parts(
        self: Arc<Self>,
        events: impl Into<TapReceiver>,
        mut session: Arc<SessionShared>,
        mut rollover: Option<(Duration, NextPart)>,
    ) {
        let mut events = events.into();
        let mut w = WriterState::new();
        // A spool that cannot be written yet (ENOSPC, EMFILE) is retried with every event: the
        // recording starts (with a gap) once it can.
        self.ensure_header(&session, &mut w).await;
        while let Some(event) = events.recv().await {
            let missed = event.missed_before();
            if missed > 0 {
                // The tap could not queue these (writer behind): a gap in the recording.
                session.plan().note_missing(missed);
                w.sequence.gap();
                session.report();
            }
            match event {
                TapEvent::Init {
                    data, info, rung, ..
                } => {
                    session.plan().set_rung(rung);
                    w.sequence.new_init(data, &info);
                    self.store_init(&session, &mut w).await;
                }
                TapEvent::Segment {
                    segment, closed_at, ..
                } => {
                    if let Some((max, next)) = rollover.as_mut() {
                        let full = w.part_secs >= max.as_secs_f64();
                        if full && segment.independent && w.sequence.has_init() {
                            session = self.roll_over(&session, &mut w, next).await;
                        }
                    }
                    if segment.duration.is_finite() && segment.duration > 0.0 {
                        w.part_secs += segment.duration;
                    }
                    self.store_segment(&session, &mut w, segment, closed_at)
                        .await;
                }
                TapEvent::Missed { .. } => update_header(&session).await,
            }
        }
        if let Some(reason) = events.failure() {
            // Saved with the ended header below: a crash before finalizing keeps it too.
            tracing::warn!(reason = %reason, "the stream was ended by a failure; its recording \
                says so");
            session.plan().stream_failed(&reason);
        }
        self.end_part(&session, &w).await;
    }

    /// The stream ended (or its producer went away, or the part is long enough). The header is
    /// marked first: only then may the uploader finalize (and remove the spool folder).
    async fn end_part(&self, session: &SessionShared, w: &WriterState) {
        if !w.header_saved && save_header(session, true).await.is_err() {
            tracing::error!(
                "nothing could be written to the recording spool; not recording this session"
            );
            session.plan().abandon();
            session.wake.notify_one();
            return;
        }
        session.plan().stamp_end(Utc::now());
        if let Err(e) = save_header(session, true).await {
            tracing::warn!(error = %e, "cannot mark the spool as ended");
        }
        session.plan().writer_ended();
        session.wake.notify_one();
    }

    /// Ends this part and starts the next one with the current init (stored there as init-0).
    async fn roll_over(
        &self,
        session: &SessionShared,
        w: &mut WriterState,
        next: &mut NextPart,
    ) -> Arc<SessionShared> {
        let ended = session.plan().manifest().clone();
        let init = w.sequence.current_init();
        self.end_part(session, w).await;
        let part = next(&ended);
        part.plan().set_rung(ended.rung.clone());
        *w = WriterState::new();
        if let Some((data, info)) = init {
            w.sequence.new_init(data, &info);
        }
        tracing::info!(parent: &part.span, continues = %ended.id,
            duration_secs = ended.duration_secs, "recording continues in a new part");
        self.ensure_header(&part, w).await;
        part
    }

    /// Stores the init waiting in `sequence`, if any. False if it is still not stored: then no
    /// segment may be written (it would name an init that does not exist).
    async fn store_init(&self, session: &SessionShared, w: &mut WriterState) -> bool {
        if !self.ensure_header(session, w).await {
            return false;
        }
        let Some((data, entry)) = w.sequence.pending_init() else {
            return true;
        };
        let dir = session.dir.clone();
        let spooled = entry.clone();
        if let Err(e) = off_thread(move || write_entry(&dir, &spooled, &data)).await {
            spool_failed(session, &entry.file_name(), &e, &mut w.errors);
            return false;
        }
        w.sequence.init_stored();
        self.add(entry.bytes());
        session.plan().spooled(entry, None);
        // The rung and codecs, for a recovery after a crash.
        update_header(session).await;
        session.wake.notify_one();
        true
    }

    async fn store_segment(
        &self,
        session: &SessionShared,
        w: &mut WriterState,
        segment: Segment,
        closed_at: std::time::Instant,
    ) {
        let init_ready = self.store_init(session, w).await;
        let sequence = &mut w.sequence;
        // Before the first init nothing is playable; such a segment is skipped.
        if init_ready && !sequence.has_init() {
            return;
        }
        if !init_ready {
            // Its init is not stored (retried before every segment): it cannot be played.
            session.plan().note_missing(1);
            sequence.gap();
            update_header(session).await;
            return;
        }
        if !self.fits(segment.data.len() as u64) {
            self.full();
            session.plan().note_missing(1);
            sequence.gap();
            // The missing count survives a crash.
            update_header(session).await;
            return;
        }
        let entry = sequence.segment(&segment);
        let dir = session.dir.clone();
        let spooled = entry.clone();
        let data = segment.data;
        if let Err(e) = off_thread(move || write_entry(&dir, &spooled, &data)).await {
            spool_failed(session, &entry.file_name(), &e, &mut w.errors);
            session.plan().note_missing(1);
            sequence.gap();
            update_header(session).await;
            return;
        }
        self.add(entry.bytes());
        self.metrics.record_segments.inc();
        session.plan().spooled(entry, Some(closed_at));
        session.wake.notify_one();
    }

    /// Writes the spool header unless it is there. False while it cannot be written: nothing
    /// can be spooled then (a recovery would not find the files).
    async fn ensure_header(&self, session: &SessionShared, w: &mut WriterState) -> bool {
        if w.header_saved {
            return true;
        }
        match save_header(session, false).await {
            Ok(()) => w.header_saved = true,
            Err(e) => spool_failed(session, HEADER_FILE, &e, &mut w.errors),
        }
        w.header_saved
    }
}

/// Numbers spooled files and carries a gap forward as a discontinuity on the next segment. An
/// init gets its version for good only once stored: until then it waits here, is retried
/// before each segment, and segments are not written (they would name a missing init).
#[derive(Debug, Default)]
pub(super) struct Sequencer {
    next_init: u64,
    /// The latest stored init: the one new segments use. None while a newer one waits.
    current_init: Option<u64>,
    pending_init: Option<(Bytes, InitInfo, JournalEntry)>,
    /// The stored init's data, for the next part.
    stored_init: Option<(Bytes, InitInfo)>,
    next_segment: u64,
    gap: bool,
}

impl Sequencer {
    pub(super) fn gap(&mut self) {
        self.gap = true;
    }

    pub(super) fn has_init(&self) -> bool {
        self.current_init.is_some()
    }

    /// New codec parameters: segments wait for this init to be stored.
    pub(super) fn new_init(&mut self, data: Bytes, info: &InitInfo) {
        let (width, height) = info.video.as_ref().map_or((0, 0), |v| (v.width, v.height));
        let entry = JournalEntry::Init(InitEntry {
            version: self.next_init,
            bytes: data.len() as u64,
            codecs: info.codecs(),
            width,
            height,
        });
        self.current_init = None;
        self.pending_init = Some((data, info.clone(), entry));
    }

    pub(super) fn pending_init(&self) -> Option<(Bytes, JournalEntry)> {
        let (data, _, entry) = self.pending_init.as_ref()?;
        Some((data.clone(), entry.clone()))
    }

    /// The init new segments use (None while a newer one waits to be stored).
    fn current_init(&self) -> Option<(Bytes, InitInfo)> {
        self.current_init.and(self.stored_init.clone())
    }

    /// The waiting init is stored: its version is taken and new segments use it.
    pub(super) fn init_stored(&mut self) {
        if let Some((data, info, JournalEntry::Init(init))) = self.pending_init.take() {
            self.stored_init = Some((data, info));
            // New codec parameters: players must reset their decoder.
            self.gap |= init.version > 0;
            self.current_init = Some(init.version);
            self.next_init = init.version + 1;
        }
    }

    /// A segment of the latest stored init; call only once [`Self::has_init`].
    pub(super) fn segment(&mut self, segment: &Segment) -> JournalEntry {
        let entry = JournalEntry::Segment(SegmentEntry {
            index: self.next_segment,
            duration: segment.duration,
            bytes: segment.data.len() as u64,
            init: self.current_init.unwrap_or(0),
            discontinuity: segment.discontinuity || self.gap,
            program_date_time: segment.program_date_time,
        });
        self.gap = false;
        self.next_segment += 1;
        entry
    }
}

/// One recording's spool writer: numbering, its log throttle, whether its header exists.
struct WriterState {
    sequence: Sequencer,
    errors: RateLimit,
    header_saved: bool,
    /// Seconds of media this part has seen (stored or missing).
    part_secs: f64,
}

impl WriterState {
    fn new() -> WriterState {
        WriterState {
            sequence: Sequencer::default(),
            errors: RateLimit::new(LOG_EVERY),
            header_saved: false,
            part_secs: 0.0,
        }
    }
}

/// A spool write failed: the recording's state says so (without paths), the log too (throttled).
fn spool_failed(session: &SessionShared, file: &str, error: &StorageError, errors: &mut RateLimit) {
    let cause = match error {
        StorageError::Local { source, .. } => source.to_string(),
        other => other.to_string(),
    };
    let what = if file.starts_with("seg-") {
        "segment not recorded"
    } else {
        "no segment is recorded until it is"
    };
    session
        .plan()
        .spool_failed(format!("cannot write {file} to the spool: {cause}"));
    session.report();
    if let Some(suppressed) = errors.check() {
        tracing::error!(file = %file, error = %error, suppressed,
            "cannot write to the recording spool; {what}");
    }
}
