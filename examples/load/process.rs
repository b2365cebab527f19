//! The server's CPU, RSS, threads and file descriptors from /proc, sampled while the load runs.

use std::time::Instant;

#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Sample {
    pub at_secs: f64,
    /// CPU-seconds per second since the previous sample.
    pub cpu: f64,
    pub rss_mib: f64,
    pub threads: u64,
    pub fds: u64,
}

pub struct Sampler {
    pid: u32,
    start: Instant,
    last: Option<(Instant, f64)>,
}

impl Sampler {
    pub fn new(pid: u32) -> Self {
        Sampler {
            pid,
            start: Instant::now(),
            last: None,
        }
    }

    /// CPU-seconds the process has used so far.
    pub fn cpu_secs(&self) -> Option<f64> {
        livegate::util::process::usage(Some(self.pid)).map(|u| u.cpu_secs)
    }

    pub fn sample(&mut self) -> Option<Sample> {
        let now = Instant::now();
        let usage = livegate::util::process::usage(Some(self.pid))?;
        let cpu = match self.last {
            Some((at, before)) => (usage.cpu_secs - before) / now.duration_since(at).as_secs_f64(),
            None => 0.0,
        };
        self.last = Some((now, usage.cpu_secs));
        Some(Sample {
            at_secs: now.duration_since(self.start).as_secs_f64(),
            cpu,
            rss_mib: usage.rss_bytes as f64 / (1024.0 * 1024.0),
            threads: usage.threads,
            fds: usage.open_fds,
        })
    }
}
