//! A recording's stored `index.m3u8` read back by the download route
//! (`record::vod::download_parts`, m3u8-rs underneath), with every file it names present.
//!
//! Contract: no panic; a playlist is either refused or split into parts that each start with an
//! init segment and only name recording files of the folder.
#![no_main]

use std::collections::HashMap;

use libfuzzer_sys::fuzz_target;
use livegate::record::session::is_recording_file;
use livegate::record::vod;

fuzz_target!(|data: &[u8]| {
    let folder = "user/20260101T000000Z-abcdef/";
    // Every URI-looking line is "in storage", so the parts are checked, not the lookups.
    let text = String::from_utf8_lossy(data);
    let sizes: HashMap<String, u64> = text
        .split(|c: char| c.is_whitespace() || c == '"' || c == ',' || c == '=')
        .filter(|t| is_recording_file(t))
        .map(|t| (format!("{folder}{t}"), t.len() as u64))
        .collect();
    if let Ok(parts) = vod::download_parts(folder, data, &sizes) {
        for part in parts {
            let (init, rest) = part.split_first().expect("a part starts with its init");
            assert!(init.key.starts_with(folder));
            assert!(is_recording_file(&init.key[folder.len()..]));
            for o in rest {
                assert!(o.key.starts_with(folder));
                assert!(is_recording_file(&o.key[folder.len()..]));
            }
        }
    }
});
