//! Recording files read back from disk: a spooled session's `session.json` and `journal.jsonl`,
//! recovered as a restart recovers them (`record::fuzzing::recover_spool`: `load_session` and
//! `recover`), the playlist rendered from the result, and a stored `manifest.json` as the
//! catalog reads it. Input: the header, a NUL byte, the journal (real spool files seed it).
//!
//! Contract: no panic, whatever the files hold (a crash here stops every restart); the rendered
//! playlist parses back and lists exactly the recovered segments; the manifest written for the
//! recording reads back.
#![no_main]

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use livegate::record::fuzzing::recover_spool;
use livegate::record::session::{self, Manifest};
use livegate::record::vod;

fn spool_dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let base = if std::path::Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        let dir = base.join(format!("livegate-fuzz-spool-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("spool dir");
        dir
    })
}

fuzz_target!(|data: &[u8]| {
    let (header, journal) = match data.iter().position(|&b| b == 0) {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &[][..]),
    };

    // The catalog's read of a stored manifest.
    if let Ok(m) = serde_json::from_slice::<Manifest>(header) {
        let _ = session::parse_recording_id(&m.id);
    }

    let dir = spool_dir();
    std::fs::write(dir.join("session.json"), header).expect("write header");
    std::fs::write(dir.join("journal.jsonl"), journal).expect("write journal");
    let Some((recording, _interrupted)) = recover_spool(dir) else {
        return;
    };

    // The playlist the uploader stores, read back as the download route reads it.
    let playlist = recording.playlist();
    let parsed = m3u8_rs::parse_media_playlist_res(playlist.as_bytes())
        .expect("the recording's own playlist parses");
    assert_eq!(parsed.segments.len() as u64, recording.listed());
    let folder = "u/s/";
    let sizes: HashMap<String, u64> = parsed
        .segments
        .iter()
        .flat_map(|s| [Some(&s.uri), s.map.as_ref().map(|m| &m.uri)])
        .flatten()
        .map(|uri| (format!("{folder}{uri}"), 1))
        .collect();
    let parts = vod::download_parts(folder, playlist.as_bytes(), &sizes)
        .expect("every file the playlist names is there");
    let objects: usize = parts.iter().map(Vec::len).sum();
    assert_eq!(objects as u64, recording.listed() + parts.len() as u64);

    // The manifest the uploader stores reads back (when its numbers are representable).
    let json = serde_json::to_vec(&recording.manifest).expect("manifest to JSON");
    if recording.manifest.duration_secs.is_finite() {
        let back: Manifest = serde_json::from_slice(&json).expect("manifest reads back");
        assert_eq!(back.id, recording.manifest.id);
    }
});
