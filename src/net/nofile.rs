//! The process's open-file limit (RLIMIT_NOFILE) against the connection caps: every connection is
//! a file descriptor, so caps above the limit do not hold back an attacker, they make `accept`
//! fail for everyone (and recording and relays with it). At start-up the soft limit is raised
//! toward the hard one, and the caps must fit in what is left after a reserve.

/// Descriptors kept for everything that is not a client connection: listeners, the data
/// directory, recording spool and uploads, relays, the key store, libav.
pub const RESERVE: u64 = 1024;

#[derive(Debug, thiserror::Error)]
pub enum NofileError {
    #[error("cannot read RLIMIT_NOFILE: {0}")]
    Query(std::io::Error),
    #[error(
        "the open-file limit (RLIMIT_NOFILE) is {limit} (hard limit {hard}), but the connection \
         caps need {needed}: {parts} + {RESERVE} kept for files, recording and relays. Raise the \
         limit (`ulimit -n`, systemd `LimitNOFILE=`, docker `--ulimit nofile=`) or lower {settings}"
    )]
    TooLow {
        limit: u64,
        hard: u64,
        needed: u64,
        parts: String,
        settings: String,
    },
}

/// The soft and hard RLIMIT_NOFILE after raising the soft limit as far as allowed.
pub fn raise_soft_limit() -> Result<(u64, u64), NofileError> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into the valid struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(NofileError::Query(std::io::Error::last_os_error()));
    }
    // An unlimited hard limit is still capped by the kernel (fs.nr_open, 1 Mi by default).
    let targets = [lim.rlim_max, 1 << 20, 1 << 16];
    for target in targets {
        if target <= lim.rlim_cur || target > lim.rlim_max {
            continue;
        }
        let raised = libc::rlimit {
            rlim_cur: target,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: setrlimit reads the valid struct it is given.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            lim.rlim_cur = target;
            break;
        }
    }
    // rlim_t is u64 on Linux but not on every target.
    #[allow(clippy::unnecessary_cast)]
    Ok((lim.rlim_cur as u64, lim.rlim_max as u64))
}

/// Whether `caps` (setting name, connections) plus [`RESERVE`] fit in `limit` descriptors.
pub fn check(limit: u64, hard: u64, caps: &[(&str, u64)]) -> Result<u64, NofileError> {
    let needed = caps
        .iter()
        .fold(RESERVE, |sum, (_, n)| sum.saturating_add(*n));
    if needed <= limit {
        return Ok(needed);
    }
    let parts = caps
        .iter()
        .map(|(name, n)| format!("{name} {n}"))
        .collect::<Vec<_>>()
        .join(" + ");
    let settings = caps
        .iter()
        .map(|(name, _)| *name)
        .collect::<Vec<_>>()
        .join(" / ");
    Err(NofileError::TooLow {
        limit,
        hard,
        needed,
        parts,
        settings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_that_fit_pass_and_the_error_names_the_limit_and_settings() {
        let caps = [
            ("rtmp.max_connections", 1000),
            ("http.max_connections", 10_000),
        ];
        assert_eq!(check(1 << 20, 1 << 20, &caps).unwrap(), 12_024);
        let err = check(4096, 4096, &caps).unwrap_err().to_string();
        assert!(err.contains("RLIMIT_NOFILE) is 4096"), "{err}");
        assert!(err.contains("need 12024"), "{err}");
        assert!(
            err.contains("lower rtmp.max_connections / http.max_connections"),
            "{err}"
        );
    }

    #[test]
    fn raising_never_lowers_the_soft_limit() {
        let (soft, hard) = raise_soft_limit().unwrap();
        assert!(soft <= hard);
        let (again, _) = raise_soft_limit().unwrap();
        assert_eq!(again, soft);
    }
}
