//! LL-HLS blocking requests, sans-IO: what a rendition last published, and whether a playlist
//! request with `_HLS_msn` / `_HLS_part` (RFC 8216bis §6.2.5.2) or a request for a hinted part
//! can be answered now, must wait for the next update, or is refused.
//!
//! The HTTP side holds a `tokio::sync::watch` receiver per request: one update per part wakes
//! every waiter once, and each finds the playlist already rendered in [`Published`].

use std::sync::Arc;

/// A rendition's playlist as last rendered, with the position it describes.
#[derive(Debug)]
pub struct Published {
    /// None before the first segment (or part).
    pub playlist: Option<Arc<str>>,
    /// The media sequence number of the segment being built.
    pub next_msn: u64,
    /// Parts of the segment being built so far.
    pub parts_in_next: u64,
    /// Parts of the newest complete segment.
    pub parts_in_last: u64,
    pub ended: bool,
    /// How many parts past the newest a request may ask for before it is refused
    /// ([`advance_part_limit`] of the playlist's PART-TARGET).
    pub advance_part_limit: u64,
}

impl Default for Published {
    fn default() -> Self {
        Published {
            playlist: None,
            next_msn: 0,
            parts_in_next: 0,
            parts_in_last: 0,
            ended: false,
            advance_part_limit: advance_part_limit(1.0),
        }
    }
}

/// RFC 8216bis §6.2.5.2's Advance Part Limit: three divided by the part target when that is
/// under a second (10 parts of 0.3 s: three seconds ahead), three otherwise. The top rung's
/// encoder can trail a lower rung by a few parts, and hls.js switching to it asks for parts it
/// has not cut yet: a tighter limit refuses requests made in normal play.
pub fn advance_part_limit(part_target_secs: f64) -> u64 {
    if part_target_secs > 0.0 && part_target_secs < 1.0 {
        (3.0 / part_target_secs).ceil() as u64
    } else {
        3
    }
}

/// A playlist request's delivery directives.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Directives {
    pub msn: Option<u64>,
    pub part: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Answer with the published playlist.
    Ready,
    /// Wait for the next update.
    Wait,
    /// 400, with the reason.
    Refuse(&'static str),
}

impl Directives {
    /// Parses `_HLS_msn`, `_HLS_part` (and ignores `_HLS_skip`: no delta updates are offered)
    /// from a query string.
    pub fn parse(query: &str) -> Result<Self, &'static str> {
        let mut d = Directives::default();
        for (key, value) in query.split('&').filter_map(|kv| kv.split_once('=')) {
            let number = || value.parse::<u64>().map_err(|_| "not a number");
            match key {
                "_HLS_msn" => d.msn = Some(number().map_err(|_| "_HLS_msn is not a number")?),
                "_HLS_part" => d.part = Some(number().map_err(|_| "_HLS_part is not a number")?),
                _ => {}
            }
        }
        if d.part.is_some() && d.msn.is_none() {
            return Err("_HLS_part without _HLS_msn");
        }
        Ok(d)
    }

    pub fn blocks(&self) -> bool {
        self.msn.is_some()
    }
}

impl Published {
    /// The newest media sequence number listed (the segment being built once it has a part).
    fn last_msn(&self) -> Option<u64> {
        if self.parts_in_next > 0 {
            Some(self.next_msn)
        } else {
            self.next_msn.checked_sub(1)
        }
    }

    /// Whether a request with these directives is answered now.
    pub fn decide(&self, d: Directives) -> Decision {
        let Some(msn) = d.msn else {
            return Decision::Ready;
        };
        if self.ended {
            return Decision::Ready; // after ENDLIST the directives are ignored
        }
        let last = self.last_msn();
        if msn > last.map_or(0, |l| l.saturating_add(2)) && msn > 2 {
            return Decision::Refuse("_HLS_msn is more than two segments ahead");
        }
        let Some(part) = d.part else {
            return if msn < self.next_msn {
                Decision::Ready
            } else {
                Decision::Wait
            };
        };
        if msn == self.next_msn && part > self.parts_in_next + self.advance_part_limit {
            return Decision::Refuse("_HLS_part is too far ahead");
        }
        let ready = if msn + 1 < self.next_msn {
            true
        } else if msn + 1 == self.next_msn {
            // A part past the segment's last means the next segment's first.
            part < self.parts_in_last || self.parts_in_next > 0
        } else if msn == self.next_msn {
            part < self.parts_in_next
        } else {
            false
        };
        if ready {
            Decision::Ready
        } else {
            Decision::Wait
        }
    }

    /// Whether part `index` of segment `msn` exists (Ready), may still come (Wait), or will
    /// not (Refuse: its segment closed before it, or it is further ahead than a hint goes).
    pub fn part(&self, msn: u64, index: u64) -> Decision {
        if msn < self.next_msn {
            return if msn + 1 == self.next_msn && index >= self.parts_in_last {
                Decision::Refuse("the segment ended before this part")
            } else {
                Decision::Ready // exists, or left the window: the lookup says which
            };
        }
        if self.ended || msn > self.next_msn || index > self.parts_in_next {
            return Decision::Refuse("no such part");
        }
        if index < self.parts_in_next {
            Decision::Ready
        } else {
            Decision::Wait
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Segment 10 being built with 2 parts; segment 9 complete with 7.
    fn at(next_msn: u64, parts_in_next: u64) -> Published {
        Published {
            playlist: Some(Arc::from("")),
            next_msn,
            parts_in_next,
            parts_in_last: 7,
            ended: false,
            advance_part_limit: 3,
        }
    }

    fn d(msn: u64, part: Option<u64>) -> Directives {
        Directives {
            msn: Some(msn),
            part,
        }
    }

    #[test]
    fn parses_the_directives() {
        assert_eq!(Directives::parse(""), Ok(Directives::default()));
        assert_eq!(
            Directives::parse("_HLS_msn=12&_HLS_part=3&_HLS_skip=YES"),
            Ok(d(12, Some(3)))
        );
        assert_eq!(Directives::parse("_HLS_msn=12"), Ok(d(12, None)));
        assert!(Directives::parse("_HLS_part=3").is_err());
        assert!(Directives::parse("_HLS_msn=-1").is_err());
        assert!(Directives::parse("_HLS_msn=99999999999999999999999").is_err());
        assert!(!Directives::parse("token=abc").unwrap().blocks());
    }

    #[test]
    fn parts_that_exist_are_ready_and_the_next_one_waits() {
        let p = at(10, 2);
        assert_eq!(p.decide(d(10, Some(1))), Decision::Ready);
        assert_eq!(p.decide(d(10, Some(2))), Decision::Wait);
        assert_eq!(p.decide(d(9, Some(3))), Decision::Ready);
        assert_eq!(p.decide(d(3, Some(0))), Decision::Ready);
        // A part past segment 9's last is segment 10's first, which exists.
        assert_eq!(p.decide(d(9, Some(7))), Decision::Ready);
        // Without parts: a whole segment.
        assert_eq!(p.decide(d(9, None)), Decision::Ready);
        assert_eq!(p.decide(d(10, None)), Decision::Wait);
        assert_eq!(p.decide(d(11, None)), Decision::Wait);
    }

    #[test]
    fn a_part_past_a_finished_segment_waits_for_the_next_segment() {
        let p = at(10, 0);
        assert_eq!(p.decide(d(9, Some(6))), Decision::Ready);
        assert_eq!(p.decide(d(9, Some(7))), Decision::Wait);
        assert_eq!(p.decide(d(10, Some(0))), Decision::Wait);
    }

    #[test]
    fn too_far_ahead_is_refused_at_once() {
        let p = at(10, 2);
        assert_eq!(p.decide(d(12, Some(0))), Decision::Wait);
        assert!(matches!(p.decide(d(13, None)), Decision::Refuse(_)));
        assert!(matches!(p.decide(d(10, Some(6))), Decision::Refuse(_)));
        assert_eq!(p.decide(d(10, Some(5))), Decision::Wait);
        // Before anything exists, the first segments may be waited for.
        let empty = Published::default();
        assert_eq!(empty.decide(d(0, Some(0))), Decision::Wait);
        assert_eq!(empty.decide(d(2, None)), Decision::Wait);
        assert!(matches!(empty.decide(d(3, None)), Decision::Refuse(_)));
    }

    #[test]
    fn the_advance_part_limit_is_three_seconds_of_parts() {
        assert_eq!(advance_part_limit(0.3), 10);
        assert_eq!(advance_part_limit(0.5), 6);
        assert_eq!(advance_part_limit(1.0), 3);
        assert_eq!(advance_part_limit(2.0), 3);
        assert_eq!(advance_part_limit(0.0), 3);
        // 0.3 s parts: a request 10 parts past the newest waits, 11 is refused.
        let p = Published {
            advance_part_limit: advance_part_limit(0.3),
            ..at(10, 2)
        };
        assert_eq!(p.decide(d(10, Some(12))), Decision::Wait);
        assert!(matches!(p.decide(d(10, Some(13))), Decision::Refuse(_)));
    }

    #[test]
    fn after_endlist_everything_is_ready() {
        let mut p = at(10, 0);
        p.ended = true;
        assert_eq!(p.decide(d(11, Some(4))), Decision::Ready);
        assert_eq!(p.part(10, 0), Decision::Refuse("no such part"));
    }

    #[test]
    fn hinted_parts() {
        let p = at(10, 2);
        assert_eq!(p.part(10, 1), Decision::Ready);
        assert_eq!(p.part(10, 2), Decision::Wait);
        assert!(matches!(p.part(10, 3), Decision::Refuse(_)));
        assert!(matches!(p.part(11, 0), Decision::Refuse(_)));
        assert_eq!(p.part(9, 6), Decision::Ready);
        assert!(matches!(p.part(9, 7), Decision::Refuse(_)));
    }

    proptest::proptest! {
        /// Any query string (network input) parses or is refused, never panics.
        #[test]
        fn any_query_parses_or_is_refused(query in ".{0,200}", msn in proptest::prelude::any::<u64>()) {
            let _ = Directives::parse(&query);
            let parsed = Directives::parse(&format!("{query}&_HLS_msn={msn}"));
            if let Ok(d) = parsed {
                proptest::prop_assert!(d.msn.is_some());
            }
        }

        /// Whatever the position and request, a decision never panics, and a request for a
        /// position at or before the newest part is never made to wait.
        #[test]
        fn decisions_are_total(next in 0u64..1000, parts in 0u64..20, last in 0u64..20,
                               msn in 0u64..1100, part in proptest::option::of(0u64..30)) {
            let p = Published { playlist: None, next_msn: next, parts_in_next: parts,
                                parts_in_last: last, ended: false,
                                advance_part_limit: advance_part_limit(0.3) };
            let decision = p.decide(d(msn, part));
            let reached = msn < next.saturating_sub(1)
                || (msn < next && part.is_none_or(|k| k < last))
                || (msn == next && part.is_some_and(|k| k < parts));
            if reached {
                proptest::prop_assert_eq!(decision, Decision::Ready);
            }
        }
    }
}
