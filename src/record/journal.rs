//! The spool journal's framing: appends that cannot tear into the next record.
//!
//! Each record is one line, `J1 <crc32 of the JSON, 8 hex digits> <JSON>\n`, written with one
//! `write` of the whole line. A crash or a short write (ENOSPC) can still leave a torn tail; the
//! appender then starts the next record on a fresh line (and first tries to cut the tail off),
//! and the reader verifies every record's checksum and resynchronizes on the `J1 ` marker, so a
//! torn record costs itself only, never the record after it. Lines without the marker are read
//! as plain JSON: journals written before the framing existed still load.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use super::session::JournalEntry;

const MARKER: &[u8] = b"J1 ";
/// Marker, 8 hex digits and a space.
const PREFIX_LEN: usize = MARKER.len() + 9;
/// Markers tried per line: bounds the work a hostile journal can cause.
const MAX_MARKERS_PER_LINE: usize = 16;

/// One framed journal line, newline included.
pub fn encode(entry: &JournalEntry) -> Vec<u8> {
    // Serializing our own plain structs cannot fail.
    let json = serde_json::to_vec(entry).unwrap_or_default();
    let mut line = Vec::with_capacity(PREFIX_LEN + json.len() + 1);
    line.extend_from_slice(MARKER);
    line.extend_from_slice(format!("{:08x} ", crc32fast::hash(&json)).as_bytes());
    line.extend_from_slice(&json);
    line.push(b'\n');
    line
}

/// Every intact record of a journal, in order. Torn, corrupt or unknown records are skipped.
pub fn parse(bytes: &[u8]) -> Vec<JournalEntry> {
    let mut out = Vec::new();
    for line in bytes.split(|b| *b == b'\n') {
        parse_line(line, &mut out);
    }
    out
}

fn parse_line(line: &[u8], out: &mut Vec<JournalEntry>) {
    let starts: Vec<usize> = line
        .windows(MARKER.len())
        .enumerate()
        .filter(|(_, w)| *w == MARKER)
        .map(|(i, _)| i)
        .take(MAX_MARKERS_PER_LINE)
        .collect();
    if starts.is_empty() {
        // A journal from before the framing: one plain JSON record per line.
        if let Ok(entry) = serde_json::from_slice(line) {
            out.push(entry);
        }
        return;
    }
    // A torn record followed by a whole one on the same line (the tail was not cut off): each
    // stretch from a marker to the next is tried, then the longer stretches, in case a record's
    // JSON held the marker itself.
    let mut i = 0;
    while i < starts.len() {
        let found = (i + 1..=starts.len()).find_map(|j| {
            let end = starts.get(j).copied().unwrap_or(line.len());
            decode(&line[starts[i]..end]).map(|entry| (j, entry))
        });
        match found {
            Some((next, entry)) => {
                out.push(entry);
                i = next;
            }
            None => i += 1,
        }
    }
}

/// One framed record (marker included, no newline), if its checksum holds.
fn decode(record: &[u8]) -> Option<JournalEntry> {
    let crc = std::str::from_utf8(record.get(MARKER.len()..PREFIX_LEN - 1)?).ok()?;
    let crc = u32::from_str_radix(crc, 16).ok()?;
    if record.get(PREFIX_LEN - 1) != Some(&b' ') {
        return None;
    }
    let json = record.get(PREFIX_LEN..)?;
    if crc32fast::hash(json) != crc {
        return None;
    }
    serde_json::from_slice(json).ok()
}

/// Appends one record and syncs it. A torn tail left by an earlier failure is cut off (or, if
/// that fails, skipped by starting on a fresh line); a failed write is cut off again.
pub fn append(path: &Path, entry: &JournalEntry) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .read(true)
        .append(true)
        .open(path)?;
    let len = file.metadata()?.len();
    let mut line = encode(entry);
    let mut keep = len;
    if len > 0 {
        let mut last = [0u8; 1];
        file.seek(SeekFrom::Start(len - 1))?;
        file.read_exact(&mut last)?;
        if last[0] != b'\n' {
            keep = last_newline(&mut file, len)?;
            if file.set_len(keep).is_err() {
                // Still torn: the reader skips it once the record starts on its own line.
                line.insert(0, b'\n');
                keep = len;
            }
        }
    }
    if let Err(e) = file.write_all(&line) {
        // Best effort: leave no torn tail for the next append.
        let _ = file.set_len(keep);
        return Err(e);
    }
    file.sync_data()
}

/// The length of the file up to and including its last newline before `len` (0 if none).
fn last_newline(file: &mut std::fs::File, len: u64) -> std::io::Result<u64> {
    const CHUNK: u64 = 4096;
    let mut end = len;
    let mut buf = vec![0u8; CHUNK as usize];
    while end > 0 {
        let start = end.saturating_sub(CHUNK);
        let n = (end - start) as usize;
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(&mut buf[..n])?;
        if let Some(i) = buf[..n].iter().rposition(|b| *b == b'\n') {
            return Ok(start + i as u64 + 1);
        }
        end = start;
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::session::{InitEntry, SegmentEntry};

    fn entries() -> Vec<JournalEntry> {
        let mut out = vec![JournalEntry::Init(InitEntry {
            version: 0,
            bytes: 700,
            codecs: "avc1.64001f,mp4a.40.2".into(),
            width: 1280,
            height: 720,
        })];
        for index in 0..3 {
            out.push(JournalEntry::Segment(SegmentEntry {
                index,
                duration: 2.002,
                bytes: 1000 + index,
                init: 0,
                discontinuity: index == 2,
                program_date_time: chrono::DateTime::from_timestamp(1_700_000_000, 0)
                    .unwrap_or_default(),
            }));
        }
        out
    }

    fn journal(entries: &[JournalEntry]) -> Vec<u8> {
        entries.iter().flat_map(encode).collect()
    }

    #[test]
    fn legacy_plain_json_lines_still_load() {
        let text: String = entries()
            .iter()
            .map(|e| serde_json::to_string(e).unwrap_or_default() + "\n")
            .collect();
        assert_eq!(parse(text.as_bytes()), entries());
    }

    #[test]
    fn a_flipped_byte_costs_its_record_only() {
        let all = entries();
        let mut bytes = journal(&all);
        let second = encode(&all[0]).len() + PREFIX_LEN + 5;
        bytes[second] ^= 0x01;
        let mut expected = all.clone();
        expected.remove(1);
        assert_eq!(parse(&bytes), expected);
    }

    /// A journal cut at every byte keeps every record written in full before the cut, and a
    /// record appended right after the torn tail (without the appender's repair) is kept too.
    #[test]
    fn recovery_keeps_every_complete_record_at_every_cut() {
        let all = entries();
        let bytes = journal(&all);
        for cut in 0..=bytes.len() {
            for glue in [false, true] {
                let mut torn = bytes[..cut].to_vec();
                // A record is whole once every byte but its newline is in.
                let mut end = 0;
                let complete = all
                    .iter()
                    .take_while(|e| {
                        end += encode(e).len();
                        end - 1 <= cut
                    })
                    .count();
                let mut expected = all[..complete].to_vec();
                if glue {
                    torn.extend_from_slice(&encode(&all[1]));
                    expected.push(all[1].clone());
                }
                assert_eq!(parse(&torn), expected, "cut at {cut}, glued {glue}");
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..600)) {
            let _ = parse(&bytes);
        }
    }

    #[test]
    fn every_cut_of_the_file_is_repaired_by_the_next_append() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("journal");
        let all = entries();
        let bytes = journal(&all);
        for cut in 0..=bytes.len() {
            std::fs::write(&path, &bytes[..cut]).expect("write");
            append(&path, &all[3]).expect("append");
            let complete = bytes[..cut].iter().filter(|b| **b == b'\n').count();
            let mut expected = all[..complete].to_vec();
            expected.push(all[3].clone());
            let written = std::fs::read(&path).expect("read");
            assert_eq!(parse(&written), expected, "cut at {cut}");
            // The torn tail was cut off: the file is whole lines only.
            assert_eq!(written, journal(&expected), "cut at {cut}");
        }
    }
}
