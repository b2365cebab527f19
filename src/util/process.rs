//! A process's CPU time, resident memory, threads and open files, from Linux's /proc. The node
//! API reports its own; the load generator samples the server's.

/// What a process uses at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct Usage {
    /// User + system CPU-seconds since the process started.
    pub cpu_secs: f64,
    pub rss_bytes: u64,
    pub threads: u64,
    pub open_fds: u64,
}

/// The usage of `pid` (None: this process), or None where /proc cannot tell (not Linux, gone).
pub fn usage(pid: Option<u32>) -> Option<Usage> {
    let dir = match pid {
        Some(pid) => format!("/proc/{pid}"),
        None => "/proc/self".to_string(),
    };
    let ticks = cpu_ticks(&std::fs::read_to_string(format!("{dir}/stat")).ok()?)?;
    let status = std::fs::read_to_string(format!("{dir}/status")).ok()?;
    let open_fds = std::fs::read_dir(format!("{dir}/fd"))
        .map(|d| d.count() as u64)
        .unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Some(Usage {
        cpu_secs: ticks as f64 / hz,
        rss_bytes: status_number(&status, "VmRSS:").unwrap_or(0) * 1024,
        threads: status_number(&status, "Threads:").unwrap_or(0),
        open_fds,
    })
}

/// Bytes this process's allocator holds for live allocations (heap chunks in use plus mmapped
/// blocks), or None where the allocator cannot tell. Unlike RSS it excludes memory freed but
/// kept by the allocator, so a leak shows here while fragmentation does not.
pub fn heap_in_use() -> Option<u64> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallinfo2 (glibc ≥ 2.33) only reads the allocator's statistics.
        let info = unsafe { libc::mallinfo2() };
        Some((info.uordblks + info.hblkhd) as u64)
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        None
    }
}

/// utime + stime (clock ticks) from a `/proc/<pid>/stat` line. The command name may hold spaces
/// and parentheses, so fields are counted from the last `)`.
fn cpu_ticks(stat: &str) -> Option<u64> {
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// The first number after `name` in a `/proc/<pid>/status` text (`VmRSS:` is in kB).
fn status_number(status: &str, name: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(name))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_count_fields_after_the_command() {
        let stat = "4242 (a (weird) name) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 9";
        assert_eq!(cpu_ticks(stat), Some(325));
        assert_eq!(cpu_ticks("4242 (short) S 1"), None);
        assert_eq!(cpu_ticks("garbage"), None);
    }

    #[test]
    fn status_numbers_by_name() {
        let status = "Name:\tlivegate\nVmRSS:\t  123456 kB\nThreads:\t17\n";
        assert_eq!(status_number(status, "VmRSS:"), Some(123456));
        assert_eq!(status_number(status, "Threads:"), Some(17));
        assert_eq!(status_number(status, "VmSwap:"), None);
    }

    #[test]
    fn the_heap_grows_with_a_live_allocation_and_shrinks_when_it_is_freed() {
        let before = heap_in_use().expect("glibc");
        // Zeroed: mmapped and never touched, so it costs address space, not memory.
        let block = vec![0u8; 256 << 20];
        let during = heap_in_use().expect("glibc");
        // Other tests allocate concurrently: only the block's own size is certain.
        assert!(during >= before + (192 << 20), "{before} → {during}");
        drop(std::hint::black_box(block));
        let after = heap_in_use().expect("glibc");
        assert!(after + (192 << 20) <= during, "{during} → {after}");
    }

    #[test]
    fn this_process_is_measured() {
        let me = usage(None).expect("/proc/self");
        assert!(
            me.threads >= 1 && me.rss_bytes > 0 && me.open_fds > 0,
            "{me:?}"
        );
    }
}
