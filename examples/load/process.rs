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
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)).ok()?;
        // Fields after the command (which may hold spaces) start after the last ')'.
        let rest = &stat[stat.rfind(')')? + 2..];
        let fields: Vec<&str> = rest.split(' ').collect();
        let ticks: f64 =
            fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        Some(ticks / hz)
    }

    pub fn sample(&mut self) -> Option<Sample> {
        let now = Instant::now();
        let cpu_total = self.cpu_secs()?;
        let cpu = match self.last {
            Some((at, before)) => (cpu_total - before) / now.duration_since(at).as_secs_f64(),
            None => 0.0,
        };
        self.last = Some((now, cpu_total));
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).ok()?;
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        let fds = std::fs::read_dir(format!("/proc/{}/fd", self.pid))
            .map(|d| d.count() as u64)
            .unwrap_or(0);
        Some(Sample {
            at_secs: now.duration_since(self.start).as_secs_f64(),
            cpu,
            rss_mib: field("VmRSS:") as f64 / 1024.0,
            threads: field("Threads:"),
            fds,
        })
    }
}
