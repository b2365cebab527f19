//! The keyframe grid every rung shares: a source frame whose timestamp reaches the next grid point
//! becomes an IDR in every rung, so all rungs cut segments at identical presentation times.

/// Decides, frame by frame, where the forced keyframes go. Sans-IO.
#[derive(Debug, Clone)]
pub struct KeyframeGrid {
    interval: i64,
    next: Option<i64>,
}

impl KeyframeGrid {
    /// `interval` in the timestamps' unit (e.g. 2 s × 90 kHz).
    pub fn new(interval: i64) -> Self {
        KeyframeGrid {
            interval: interval.max(1),
            next: None,
        }
    }

    /// Whether the frame at `pts` must be a keyframe. The grid starts at the first frame and
    /// advances past `pts`, so a gap (dropped GOPs) does not produce a burst of keyframes.
    pub fn is_keyframe(&mut self, pts: i64) -> bool {
        match self.next {
            None => {
                self.next = Some(pts + self.interval);
                true
            }
            Some(next) if pts >= next => {
                let steps = (pts - next) / self.interval + 1;
                self.next = Some(next + steps * self.interval);
                true
            }
            Some(_) => false,
        }
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
        assert!(g.is_keyframe(0));
        assert!(g.is_keyframe(1_000_000));
        assert!(!g.is_keyframe(1_003_000));
        assert!(g.is_keyframe(1_180_000));
    }
}
