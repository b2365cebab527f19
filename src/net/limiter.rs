//! A connection cap, in total and per client address, with RAII permits. HTTP uses one per
//! listener; RTMP uses two (every connection, and connections that have not been accepted to
//! publish yet), so a host that opens sockets and stays silent holds a few slots, not all.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex, MutexGuard};

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LimitRefusal {
    #[error("connection limit reached")]
    Total,
    #[error("connection limit for this address reached")]
    PerAddress,
}

impl LimitRefusal {
    /// A metric label (static: labels never carry client data).
    pub fn label(self) -> &'static str {
        match self {
            LimitRefusal::Total => "connection_limit",
            LimitRefusal::PerAddress => "connection_limit_per_ip",
        }
    }
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    per_address: HashMap<IpAddr, usize>,
}

#[derive(Debug)]
struct Shared {
    max_total: usize,
    max_per_address: usize,
    /// Addresses held to `max_total` only (e.g. an edge cache in front).
    exempt: Vec<IpAddr>,
    counts: Mutex<Counts>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// At most `max_total` permits at once, and at most `max_per_address` for one client address.
#[derive(Debug, Clone)]
pub struct ConnLimiter {
    shared: Arc<Shared>,
}

/// One admitted connection; dropping it frees the slot.
#[derive(Debug)]
pub struct ConnPermit {
    shared: Arc<Shared>,
    address: IpAddr,
}

/// The address a per-address cap counts: IPv4 as is (also when IPv4-mapped), IPv6 by /64, the
/// block one subscriber usually gets (an attacker has all of it).
pub fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

impl ConnLimiter {
    pub fn new(max_total: usize, max_per_address: usize) -> Self {
        Self::with_exempt(max_total, max_per_address, Vec::new())
    }

    /// As [`ConnLimiter::new`], with addresses that only the total cap applies to.
    pub fn with_exempt(max_total: usize, max_per_address: usize, exempt: Vec<IpAddr>) -> Self {
        ConnLimiter {
            shared: Arc::new(Shared {
                max_total,
                max_per_address,
                exempt: exempt.into_iter().map(address_key).collect(),
                counts: Mutex::new(Counts::default()),
            }),
        }
    }

    /// A permit for a connection from `ip`, or why not.
    pub fn try_acquire(&self, ip: IpAddr) -> Result<ConnPermit, LimitRefusal> {
        let address = address_key(ip);
        let mut counts = self.shared.lock();
        if counts.total >= self.shared.max_total {
            return Err(LimitRefusal::Total);
        }
        let from_address = counts.per_address.entry(address).or_insert(0);
        if *from_address >= self.shared.max_per_address && !self.shared.exempt.contains(&address) {
            return Err(LimitRefusal::PerAddress);
        }
        *from_address += 1;
        counts.total += 1;
        Ok(ConnPermit {
            shared: self.shared.clone(),
            address,
        })
    }

    /// Permits held now.
    pub fn open(&self) -> usize {
        self.shared.lock().total
    }

    /// Permits held now by `ip`'s address.
    pub fn open_from(&self, ip: IpAddr) -> usize {
        let counts = self.shared.lock();
        counts
            .per_address
            .get(&address_key(ip))
            .copied()
            .unwrap_or(0)
    }

    pub fn max_total(&self) -> usize {
        self.shared.max_total
    }
}

impl Drop for ConnPermit {
    fn drop(&mut self) {
        let mut counts = self.shared.lock();
        counts.total = counts.total.saturating_sub(1);
        if let Some(n) = counts.per_address.get_mut(&self.address) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                // The map holds only addresses with open connections: it cannot grow with the
                // number of addresses ever seen.
                counts.per_address.remove(&self.address);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn caps_per_address_and_in_total_and_frees_on_drop() {
        let limiter = ConnLimiter::new(3, 2);
        let a1 = limiter.try_acquire(ip("10.0.0.1")).unwrap();
        let _a2 = limiter.try_acquire(ip("10.0.0.1")).unwrap();
        assert_eq!(
            limiter.try_acquire(ip("10.0.0.1")).unwrap_err(),
            LimitRefusal::PerAddress
        );
        let _b1 = limiter.try_acquire(ip("10.0.0.2")).unwrap();
        assert_eq!(
            limiter.try_acquire(ip("10.0.0.3")).unwrap_err(),
            LimitRefusal::Total
        );
        assert_eq!(limiter.open(), 3);
        assert_eq!(limiter.open_from(ip("10.0.0.1")), 2);
        drop(a1);
        assert_eq!(limiter.open_from(ip("10.0.0.1")), 1);
        let _c1 = limiter.try_acquire(ip("10.0.0.3")).unwrap();
        assert_eq!(limiter.open(), 3);
    }

    #[test]
    fn exempt_addresses_are_held_to_the_total_only() {
        let limiter = ConnLimiter::with_exempt(3, 1, vec![ip("10.0.0.9")]);
        let _held: Vec<_> = (0..3)
            .map(|_| limiter.try_acquire(ip("10.0.0.9")).unwrap())
            .collect();
        assert_eq!(
            limiter.try_acquire(ip("10.0.0.9")).unwrap_err(),
            LimitRefusal::Total
        );
    }

    #[test]
    fn forgets_addresses_without_connections() {
        let limiter = ConnLimiter::new(10, 10);
        for i in 0..200u8 {
            drop(limiter.try_acquire(IpAddr::from([10, 0, 1, i])).unwrap());
        }
        assert!(limiter.shared.lock().per_address.is_empty());
        assert_eq!(limiter.open(), 0);
    }

    #[test]
    fn ipv6_counts_by_slash_64_and_mapped_v4_as_v4() {
        let limiter = ConnLimiter::new(10, 1);
        let _a = limiter.try_acquire(ip("2001:db8:1:2::1")).unwrap();
        assert_eq!(
            limiter.try_acquire(ip("2001:db8:1:2:ffff::9")).unwrap_err(),
            LimitRefusal::PerAddress
        );
        assert!(limiter.try_acquire(ip("2001:db8:1:3::1")).is_ok());
        let _v4 = limiter.try_acquire(ip("192.0.2.7")).unwrap();
        assert_eq!(
            limiter.try_acquire(ip("::ffff:192.0.2.7")).unwrap_err(),
            LimitRefusal::PerAddress
        );
    }

    #[test]
    fn permits_from_many_threads_balance_out() {
        let limiter = ConnLimiter::new(1000, 1000);
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let limiter = limiter.clone();
                std::thread::spawn(move || {
                    for _ in 0..500 {
                        let p = limiter.try_acquire(IpAddr::from([10, 0, 0, t])).unwrap();
                        drop(p);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(limiter.open(), 0);
    }
}
