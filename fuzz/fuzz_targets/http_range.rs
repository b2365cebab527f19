//! HTTP `Range` headers through `record::vod::parse_range` (recording downloads).
//!
//! Contract: no panic; a partial range lies within the body (`start <= end < len`), as the
//! handler computes `Content-Length = end - start + 1` from it; an unsatisfiable range is only
//! reported for a range that asks for something.
#![no_main]

use libfuzzer_sys::fuzz_target;
use livegate::record::vod::{parse_range, RangeRequest};

fuzz_target!(|data: &[u8]| {
    if data.len() < 8 {
        return;
    }
    let len = u64::from_le_bytes(data[..8].try_into().unwrap());
    // Small bodies too, where the edge cases are.
    let lens = [len, len % 1000, 0, 1];
    let header = String::from_utf8_lossy(&data[8..]);
    for len in lens {
        match parse_range(Some(&header), len) {
            RangeRequest::Partial { start, end } => {
                assert!(start <= end && end < len, "{header:?} {len}: {start}-{end}");
            }
            RangeRequest::Unsatisfiable => {
                assert!(header.trim().len() > 6);
            }
            RangeRequest::Full => {}
        }
    }
    assert_eq!(parse_range(None, len), RangeRequest::Full);
});
