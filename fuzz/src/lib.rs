//! Helpers shared by the fuzz targets.

use std::sync::Once;

/// libFuzzer's panic hook aborts on every panic, even one that is caught. rml_rtmp 0.8 panics on
/// some malformed AMF0, and livegate catches exactly those with
/// [`livegate::rtmp::guard::guard_parser`] (the session ends, the process lives): such a panic is
/// the guard's contract working, not a finding. Every other panic still aborts.
pub fn allow_guarded_panics() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let fuzzer_hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !livegate::rtmp::guard::in_guarded_parse() {
                fuzzer_hook(info);
            }
        }));
    });
}

/// Splits `data` into the reads a socket might deliver: `selector` picks one of a few read
/// sizes (one byte at a time up to a full 64 KiB buffer), so chunk and message boundaries fall
/// anywhere.
pub fn reads(selector: u8, data: &[u8]) -> impl Iterator<Item = &[u8]> {
    const SIZES: [usize; 8] = [1, 7, 128, 1000, 1537, 4096, 16 * 1024, 64 * 1024];
    data.chunks(SIZES[usize::from(selector & 7)])
}

/// Tags of an FLV file (or bare tags without the file header): (tag type, timestamp, body).
/// Truncated tags are cut to what is there, so any input yields tags.
pub fn flv_tags(mut data: &[u8]) -> Vec<(u8, u32, &[u8])> {
    if data.len() >= 13 && &data[..3] == b"FLV" {
        data = &data[13..]; // header and PreviousTagSize0
    }
    let mut tags = Vec::new();
    while data.len() >= 11 {
        let kind = data[0] & 0x1f;
        let size = usize::from(data[1]) << 16 | usize::from(data[2]) << 8 | usize::from(data[3]);
        let ts = u32::from(data[7]) << 24
            | u32::from(data[4]) << 16
            | u32::from(data[5]) << 8
            | u32::from(data[6]);
        let body_end = (11 + size).min(data.len());
        tags.push((kind, ts, &data[11..body_end]));
        data = &data[(body_end + 4).min(data.len())..];
    }
    tags
}
