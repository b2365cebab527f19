//! The keyframe grid every rung shares: a source frame whose timestamp reaches the next grid point
//! becomes an IDR in every rung, so all rungs cut segments at identical presentation times.

/// Decides, frame by frame, where the forced keyframes go. Sans-IO.
///
/// Besides the grid, a forced keyframe needs half an interval of continuous media time since the
/// previous one: a step between frames longer than the interval (a jump) counts as none. A
/// source whose timestamps jump at every frame would otherwise get an IDR per frame in every
/// rung; x264's own `keyint` still bounds the GOP in frames. The first frame after a jump (a
/// gap: GOPs dropped while the ladder was behind) is a keyframe once [`FRAMES_BEFORE_JUMP_KEY`]
/// frames have passed since the last, so the segment after the gap starts decodable.
/// Frames since the last keyframe before a jump may force another.
pub const FRAMES_BEFORE_JUMP_KEY: u32 = 8;

#[derive(Debug, Clone)]
pub struct KeyframeGrid {
    interval: i64,
    next: Option<i64>,
    last_pts: i64,
    /// Continuous media time since the last forced keyframe.
    since_key: i64,
    frames_since_key: u32,
}

impl KeyframeGrid {
    /// `interval` in the timestamps' unit (e.g. 2 s × 90 kHz).
    pub fn new(interval: i64) -> Self {
        KeyframeGrid {
            interval: interval.max(1),
            next: None,
            last_pts: 0,
            since_key: 0,
            frames_since_key: 0,
        }
    }

    /// Whether the frame at `pts` must be a keyframe. The grid starts at the first frame and
    /// advances past `pts`, so a gap (dropped GOPs) does not produce a burst of keyframes.
    pub fn is_keyframe(&mut self, pts: i64) -> bool {
        let Some(next) = self.next else {
            self.next = Some(pts.saturating_add(self.interval));
            self.last_pts = pts;
            self.since_key = 0;
            self.frames_since_key = 0;
            return true;
        };
        let step = pts.saturating_sub(self.last_pts);
        self.last_pts = pts;
        self.frames_since_key = self.frames_since_key.saturating_add(1);
        let jump = !(0..=self.interval).contains(&step);
        if !jump {
            self.since_key = self.since_key.saturating_add(step);
        }
        if pts < next {
            return false;
        }
        let steps = pts.saturating_sub(next) / self.interval + 1;
        self.next = Some(next.saturating_add(steps.saturating_mul(self.interval)));
        let after_jump = jump && self.frames_since_key >= FRAMES_BEFORE_JUMP_KEY;
        if self.since_key < self.interval / 2 && !after_jump {
            return false;
        }
        self.since_key = 0;
        self.frames_since_key = 0;
        true
    }

    /// Restart on the next frame (after a discontinuity).
    pub fn reset(&mut self) {
        self.next = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_two_seconds_at_30fps() {
        let mut g = KeyframeGrid::new(180_000);
        let keys: Vec<i64> = (0..300)
            .map(|i| 1000 + i * 3000)
            .filter(|&pts| g.is_keyframe(pts))
            .collect();
        assert_eq!(keys, vec![1000, 181_000, 361_000, 541_000, 721_000]);
    }

    #[test]
    fn ntsc_rate_stays_on_the_grid() {
        // 29.97 fps: 3003 ticks per frame; keyframes on the first frame at/after each 2 s point.
        let mut g = KeyframeGrid::new(180_000);
        let keys: Vec<i64> = (0..600)
            .map(|i| i * 3003)
            .filter(|&pts| g.is_keyframe(pts))
            .collect();
        for (n, k) in keys.iter().enumerate() {
            assert!(
                *k >= n as i64 * 180_000 && *k < n as i64 * 180_000 + 3003,
                "{k}"
            );
        }
    }

    #[test]
    fn a_gap_gives_one_keyframe() {
        let mut g = KeyframeGrid::new(180_000);
        let mut keys = Vec::new();
        for pts in (0..60)
            .map(|i| i * 3000)
            .chain((0..90).map(|i| 1_000_000 + i * 3000))
        {
            if g.is_keyframe(pts) {
                keys.push(pts);
            }
        }
        // The frame after the gap, then the grid (anchored at the first frame); 1_080_000 comes
        // less than half an interval after the gap's keyframe, so it is skipped (1_260_000 is next).
        assert_eq!(keys, vec![0, 1_000_000, 1_261_000]);
    }

    #[test]
    fn a_gap_soon_after_a_keyframe_still_gives_one_after_it() {
        let mut g = KeyframeGrid::new(180_000);
        let mut keys = Vec::new();
        // A keyframe at 180_000, 0.5 s of frames, then 7 s dropped.
        for pts in (0..75)
            .map(|i| i * 3000)
            .chain((0..90).map(|i| 855_000 + i * 3000))
        {
            if g.is_keyframe(pts) {
                keys.push(pts);
            }
        }
        // The frame after the gap, then the grid again.
        assert_eq!(keys, vec![0, 180_000, 855_000, 1_080_000]);
    }

    #[test]
    fn timestamps_jumping_every_frame_do_not_force_a_keyframe_per_frame() {
        // +10 s per frame (a pushed timeline): before, every frame was an IDR in every rung.
        let mut g = KeyframeGrid::new(180_000);
        let forced = (0..300i64).filter(|i| g.is_keyframe(i * 900_000)).count();
        assert_eq!(forced, 1 + 299 / FRAMES_BEFORE_JUMP_KEY as usize);
        // Mixed: jumps between runs of real frames; at most one keyframe per second of frames.
        let mut g = KeyframeGrid::new(180_000);
        let mut pts = 0;
        let mut keys = 0;
        for i in 0..600i64 {
            pts += if i % 3 == 0 { 900_000 } else { 3000 };
            keys += i64::from(g.is_keyframe(pts));
        }
        assert!(
            keys <= 1 + 600 / 3 * 2 * 3000 / 90_000 + 600 / FRAMES_BEFORE_JUMP_KEY as i64,
            "{keys}"
        );
        // Far timestamps do not overflow.
        let mut g = KeyframeGrid::new(180_000);
        assert!((0..10).filter(|i| g.is_keyframe(i * 3000)).count() == 1);
        assert!(g.is_keyframe(i64::MAX - 5));
        assert!(!g.is_keyframe(i64::MAX));
    }
}
