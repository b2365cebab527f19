//! Requests per minute per client address (IPv6 by /64): a token bucket per address that
//! refills continuously, so a burst up to the minute's allowance passes and then one request
//! per refill interval. Idle addresses are forgotten, so the table stays as small as the set of
//! recent clients.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::limiter::address_key;

/// Addresses kept before idle ones are swept.
const SWEEP_AT: usize = 10_000;

pub struct RequestRate {
    per_minute: f64,
    buckets: Mutex<HashMap<IpAddr, (f64, Instant)>>,
}

impl RequestRate {
    pub fn new(per_minute: u32) -> Self {
        RequestRate {
            per_minute: f64::from(per_minute.max(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes a token for `ip`; false when its allowance is spent.
    pub fn allow(&self, ip: IpAddr, now: Instant) -> bool {
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() >= SWEEP_AT {
            let full = Duration::from_secs(60);
            buckets.retain(|_, (_, at)| now.saturating_duration_since(*at) < full);
        }
        let (tokens, at) = buckets
            .entry(address_key(ip))
            .or_insert((self.per_minute, now));
        let refill = now.saturating_duration_since(*at).as_secs_f64() * self.per_minute / 60.0;
        *tokens = (*tokens + refill).min(self.per_minute);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_refill_rate_per_address() {
        let r = RequestRate::new(6);
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let t = Instant::now();
        assert!((0..6).all(|_| r.allow(a, t)));
        assert!(!r.allow(a, t));
        assert!(r.allow(b, t), "another address has its own allowance");
        assert!(!r.allow(a, t + Duration::from_secs(9)));
        assert!(
            r.allow(a, t + Duration::from_secs(10)),
            "one token per 10 s at 6/min"
        );
        // One /64 is one client.
        let (c, d): (IpAddr, IpAddr) = (
            "2001:db8::1".parse().unwrap(),
            "2001:db8::2".parse().unwrap(),
        );
        assert!((0..6).all(|_| r.allow(c, t)));
        assert!(!r.allow(d, t));
    }
}
