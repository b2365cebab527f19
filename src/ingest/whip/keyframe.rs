//! When to ask a WebRTC publisher for a keyframe (sans-IO, time passed in). Browsers send one
//! only when asked (libwebrtc's own interval is 3000 frames), and the ladder and late viewers
//! start at a keyframe: ask at start until the first one arrives, after a loss the jitter
//! buffer could not repair, and whenever a consumer wants one. A PLI at most every
//! [`MIN_INTERVAL`]; a FIR when a PLI got no keyframe within [`ESCALATE_AFTER`].

use std::time::Duration;

const MIN_INTERVAL: Duration = Duration::from_millis(1000);
const ESCALATE_AFTER: Duration = Duration::from_millis(2500);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    Pli,
    Fir,
}

#[derive(Debug, Default)]
pub struct KeyframeRequests {
    /// A keyframe is wanted since then (None: the last one satisfied every request).
    wanted_since: Option<Duration>,
    last_sent: Option<Duration>,
    pub plis: u64,
    pub firs: u64,
}

impl KeyframeRequests {
    /// A keyframe is wanted from now on (start, loss, a consumer's request).
    pub fn want(&mut self, now: Duration) {
        self.wanted_since.get_or_insert(now);
    }

    /// A keyframe arrived: every request so far is answered.
    pub fn keyframe(&mut self) {
        self.wanted_since = None;
    }

    /// The request to send now, if one is due.
    pub fn poll(&mut self, now: Duration) -> Option<Request> {
        let since = self.wanted_since?;
        if self
            .last_sent
            .is_some_and(|last| now.saturating_sub(last) < MIN_INTERVAL)
        {
            return None;
        }
        self.last_sent = Some(now);
        if now.saturating_sub(since) >= ESCALATE_AFTER {
            self.firs += 1;
            Some(Request::Fir)
        } else {
            self.plis += 1;
            Some(Request::Pli)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[test]
    fn throttles_then_escalates_and_stops_at_a_keyframe() {
        let mut k = KeyframeRequests::default();
        assert_eq!(k.poll(MS(0)), None);
        k.want(MS(0));
        assert_eq!(k.poll(MS(0)), Some(Request::Pli));
        k.want(MS(100)); // a second reason does not restart the clock
        assert_eq!(k.poll(MS(500)), None);
        assert_eq!(k.poll(MS(1000)), Some(Request::Pli));
        assert_eq!(k.poll(MS(2000)), Some(Request::Pli));
        assert_eq!(k.poll(MS(3000)), Some(Request::Fir));
        k.keyframe();
        assert_eq!(k.poll(MS(5000)), None);
        k.want(MS(5000));
        assert_eq!(k.poll(MS(5000)), Some(Request::Pli));
        assert_eq!((k.plis, k.firs), (4, 1));
    }
}
