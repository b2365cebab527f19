//! How many ladders run at once, the CPU priority of their threads, and what a ladder thread
//! leaves behind when it ends in any way (including a panic): its slot and its gauge are guards
//! released on drop, which unwinding runs too.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use prometheus_client::metrics::gauge::Gauge;

/// What a ladder weighs against `transcode.max_ladders`, which counts ladders that encode every
/// rung. One that serves its source as the top rung decodes it and encodes only the lower rungs:
/// measured at 0.55-0.63 of a full 720p30 ladder's CPU (`scripts/bench.sh ladder`: 2 full or 3
/// such ladders keep real time on 2 cores), it weighs 3/5 of one, so the default 2 admits 3.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LadderWeight {
    Full,
    SourceRung,
}

impl LadderWeight {
    /// In fifths of a full ladder.
    fn units(self) -> usize {
        match self {
            LadderWeight::Full => 5,
            LadderWeight::SourceRung => 3,
        }
    }
}

/// The ladder slots of the process (`transcode.max_ladders`; 0 = unlimited), weighed.
#[derive(Debug, Clone)]
pub struct LadderSlots {
    max: usize,
    /// Units in use (see [`LadderWeight`]).
    used: Arc<AtomicUsize>,
    count: Arc<AtomicUsize>,
}

/// One running ladder's slot; freed when dropped.
#[derive(Debug)]
pub struct LadderSlot {
    used: Arc<AtomicUsize>,
    count: Arc<AtomicUsize>,
    weight: LadderWeight,
}

impl LadderSlots {
    pub fn new(max: usize) -> Self {
        LadderSlots {
            max,
            used: Arc::new(AtomicUsize::new(0)),
            count: Arc::new(AtomicUsize::new(0)),
        }
    }

    pub fn max(&self) -> usize {
        self.max
    }

    /// Ladders running.
    pub fn in_use(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    /// A slot of `weight` (what the ladder is expected to cost) if it fits.
    pub fn try_acquire(&self, weight: LadderWeight) -> Option<LadderSlot> {
        let max = if self.max == 0 {
            usize::MAX
        } else {
            self.max.saturating_mul(LadderWeight::Full.units())
        };
        let units = weight.units();
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n.saturating_add(units) <= max).then_some(n + units)
            })
            .ok()?;
        self.count.fetch_add(1, Ordering::AcqRel);
        Some(LadderSlot {
            used: self.used.clone(),
            count: self.count.clone(),
            weight,
        })
    }
}

impl LadderSlot {
    /// The ladder turned out to weigh `weight` (its source was or was not served as the top
    /// rung). Growing may take the slots past the maximum: a running ladder is not stopped, new
    /// ones wait until there is room again.
    pub fn set_weight(&mut self, weight: LadderWeight) {
        if weight == self.weight {
            return;
        }
        let (old, new) = (self.weight.units(), weight.units());
        if new > old {
            self.used.fetch_add(new - old, Ordering::AcqRel);
        } else {
            self.used.fetch_sub(old - new, Ordering::AcqRel);
        }
        self.weight = weight;
    }
}

impl Drop for LadderSlot {
    fn drop(&mut self) {
        self.used.fetch_sub(self.weight.units(), Ordering::AcqRel);
        self.count.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A gauge raised for as long as the guard lives.
pub struct GaugeGuard(Gauge);

impl GaugeGuard {
    pub fn new(gauge: &Gauge) -> Self {
        gauge.inc();
        GaugeGuard(gauge.clone())
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Lowers the calling thread's CPU priority by `increment` nice steps (capped at 19), like
/// `nice -n`: relative, so a server started niced keeps its ladders below its own threads. On
/// Linux the nice value is per thread (`setpriority(PRIO_PROCESS, tid)`), and a thread inherits
/// it from the thread that creates it: the rung encoder threads, x264's and libav's own worker
/// threads are all created by the ladder thread after this call, so the whole ladder runs niced
/// while tokio's workers (ingest, HTTP) keep the process's priority. A nice value rather than
/// SCHED_IDLE: idle threads get nothing while anything else wants the CPU, so a busy HTTP side
/// would stall every ladder outright; at +10 a ladder weighs about a tenth of a nice-0 thread on
/// a contended core and still progresses (dropping GOPs, as designed) instead of starving ingest.
/// Lowering one's own priority needs no privilege.
pub fn lower_thread_priority(increment: i32) {
    if increment <= 0 {
        return;
    }
    #[cfg(target_os = "linux")]
    {
        let target = (thread_nice() + increment).min(19);
        // SAFETY: gettid has no preconditions; setpriority only changes this thread's nice value.
        let result = unsafe {
            let tid = libc::gettid();
            libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, target)
        };
        if result != 0 {
            tracing::warn!(error = %std::io::Error::last_os_error(), target,
                "cannot lower the ladder thread's priority");
        }
    }
}

/// This thread's nice value (Linux), for tests and status.
pub fn thread_nice() -> i32 {
    #[cfg(target_os = "linux")]
    // SAFETY: getpriority only reads this thread's nice value.
    unsafe {
        libc::getpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t)
    }
    #[cfg(not(target_os = "linux"))]
    0
}

/// Runs `f`, turning a panic into an error message (the panic's own text).
pub fn catch_panic<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|payload| {
        payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic without a message".to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_counted_and_freed_on_drop_even_by_a_panic() {
        let slots = LadderSlots::new(2);
        let a = slots.try_acquire(LadderWeight::Full).expect("first");
        let b = slots.try_acquire(LadderWeight::Full).expect("second");
        assert!(
            slots.try_acquire(LadderWeight::SourceRung).is_none(),
            "max_ladders = 2"
        );
        drop(a);
        assert_eq!(slots.in_use(), 1);
        let gauge = Gauge::default();
        let err = catch_panic(move || {
            let _slot = b;
            let _running = GaugeGuard::new(&gauge);
            panic!("decoder exploded at frame {}", 7)
        })
        .unwrap_err();
        assert_eq!(err, "decoder exploded at frame 7");
        assert_eq!(slots.in_use(), 0, "the panicking thread's slot is free");
        assert!(slots.try_acquire(LadderWeight::Full).is_some());
        let unlimited = LadderSlots::new(0);
        let held: Vec<_> = (0..100)
            .filter_map(|_| unlimited.try_acquire(LadderWeight::Full))
            .collect();
        assert_eq!(held.len(), 100);
    }

    #[test]
    fn ladders_serving_their_source_weigh_less_and_a_weight_can_change() {
        let slots = LadderSlots::new(2);
        let mut held: Vec<_> = (0..3)
            .map(|_| {
                slots
                    .try_acquire(LadderWeight::SourceRung)
                    .expect("3 fit in 2")
            })
            .collect();
        assert!(slots.try_acquire(LadderWeight::SourceRung).is_none());
        assert_eq!(slots.in_use(), 3);
        // One turns out to encode every rung: it keeps running, over the maximum (11 of 10).
        held[0].set_weight(LadderWeight::Full);
        drop(held.pop());
        assert!(
            slots.try_acquire(LadderWeight::SourceRung).is_none(),
            "5 + 3 of 10 units: no room for 3 more"
        );
        drop(held.pop());
        let room = slots.try_acquire(LadderWeight::SourceRung).expect("5 + 3");
        held[0].set_weight(LadderWeight::SourceRung);
        drop(held);
        drop(room);
        assert_eq!(slots.in_use(), 0);
        let all: Vec<_> = (0..2)
            .map(|_| {
                slots
                    .try_acquire(LadderWeight::Full)
                    .expect("all units free")
            })
            .collect();
        assert_eq!(all.len(), 2);
    }

    #[test]
    fn gauge_guard_releases_on_unwind() {
        let gauge = Gauge::default();
        let g2 = gauge.clone();
        assert!(catch_panic(move || {
            let _g = GaugeGuard::new(&g2);
            assert_eq!(g2.get(), 1);
            panic!("boom")
        })
        .is_err());
        assert_eq!(gauge.get(), 0);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn the_nice_value_is_per_thread_and_inherited_by_threads_it_creates() {
        let before = thread_nice();
        let (own, child) = std::thread::spawn(|| {
            lower_thread_priority(7);
            let own = thread_nice();
            // Like libav's and x264's worker threads, created by the ladder thread.
            let child = std::thread::spawn(thread_nice).join().unwrap();
            (own, child)
        })
        .join()
        .unwrap();
        let want = (before + 7).min(19);
        assert_eq!((own, child), (want, want));
        assert_eq!(thread_nice(), before, "the test thread keeps its priority");
    }
}
