//! The guard around rml_rtmp's parsing of peer input. rml_rtmp 0.8 panics on some malformed
//! messages (an AMF0 command with fewer than three values reaches `drain(..3)`); a peer, be it a
//! publisher or a relay target, must not be able to crash its task that way, so such a panic
//! becomes an error that ends that one session.

thread_local! {
    /// Set while rml_rtmp parses peer input, so the panic hook can tell an expected parser panic
    /// (turned into a session error) from a real bug.
    static IN_GUARDED_PARSE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether the current thread is inside [`guard_parser`] (for the process panic hook).
pub fn in_guarded_parse() -> bool {
    IN_GUARDED_PARSE.with(|f| f.get())
}

/// rml_rtmp panicked on the input it was given.
#[derive(Debug, thiserror::Error)]
#[error("the RTMP parser rejected malformed input")]
pub struct ParserPanicked;

/// Runs rml_rtmp's parsing of peer input, turning its panics on malformed input into `Err`
/// (used by ingest's server sessions and by the relays' client sessions).
pub fn guard_parser<T>(parse: impl FnOnce() -> T) -> Result<T, ParserPanicked> {
    IN_GUARDED_PARSE.with(|f| f.set(true));
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(parse));
    IN_GUARDED_PARSE.with(|f| f.set(false));
    outcome.map_err(|_| ParserPanicked)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_parser_panic_is_an_error_and_the_flag_is_cleared() {
        assert_eq!(guard_parser(|| 7).unwrap(), 7);
        let seen_inside = std::cell::Cell::new(false);
        let result = guard_parser(|| {
            seen_inside.set(in_guarded_parse());
            let empty: Vec<u8> = Vec::new();
            // The same kind of slice panic rml_rtmp hits on a short AMF0 command.
            empty[..3].len()
        });
        assert!(result.is_err());
        assert!(seen_inside.get());
        assert!(!in_guarded_parse());
    }
}
