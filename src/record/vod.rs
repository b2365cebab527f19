//! Serving recordings: the download MP4 (init + media segments, fragmented MP4) with HTTP Range,
//! assembled from stored objects without copying the recording anywhere first.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::storage::{ObjectInfo, Storage};

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum VodError {
    #[error("the recording's playlist is not valid: {0}")]
    Playlist(String),
    #[error("the recording's playlist lists {0}, which is not in storage")]
    Missing(String),
}

/// Objects that concatenate into one playable fragmented MP4: an init segment and the media
/// segments that use it. A recording whose codec parameters changed mid-stream (new init) has
/// one part per init, since a second `moov` cannot follow fragments in the same file.
pub type DownloadPart = Vec<ObjectInfo>;

/// Splits a recording into download parts from its playlist and the stored objects' sizes.
pub fn download_parts(
    folder: &str,
    playlist: &[u8],
    sizes: &HashMap<String, u64>,
) -> Result<Vec<DownloadPart>, VodError> {
    let playlist = m3u8_rs::parse_media_playlist_res(playlist)
        .map_err(|e| VodError::Playlist(e.to_string()))?;
    let object = |uri: &str| -> Result<ObjectInfo, VodError> {
        if !super::session::is_recording_file(uri) {
            return Err(VodError::Playlist(format!("unexpected URI {uri:?}")));
        }
        let key = format!("{folder}{uri}");
        let size = *sizes
            .get(&key)
            .ok_or_else(|| VodError::Missing(uri.to_string()))?;
        Ok(ObjectInfo { key, size })
    };
    let mut parts: Vec<DownloadPart> = Vec::new();
    for segment in &playlist.segments {
        if let Some(map) = &segment.map {
            parts.push(vec![object(&map.uri)?]);
        }
        let Some(part) = parts.last_mut() else {
            return Err(VodError::Playlist("a segment before any EXT-X-MAP".into()));
        };
        part.push(object(&segment.uri)?);
    }
    Ok(parts)
}

/// What a Range request header asks of a body of `len` bytes (RFC 9110 §14).
#[derive(Debug, PartialEq, Eq)]
pub enum RangeRequest {
    /// No usable range: send everything (200). Covers a missing header, another unit, invalid
    /// syntax and multiple ranges (which we do not serve as multipart).
    Full,
    /// Bytes `start..=end` (206).
    Partial { start: u64, end: u64 },
    /// 416, with `Content-Range: bytes */len`.
    Unsatisfiable,
}

pub fn parse_range(header: Option<&str>, len: u64) -> RangeRequest {
    let Some(header) = header else {
        return RangeRequest::Full;
    };
    let header = header.trim();
    if header.len() > 200 {
        return RangeRequest::Full;
    }
    // `get` rather than indexing: the header may split a multi-byte character.
    let spec = match (header.get(..6), header.get(6..)) {
        (Some(unit), Some(spec)) if unit.eq_ignore_ascii_case("bytes=") => spec.trim(),
        _ => return RangeRequest::Full,
    };
    if spec.contains(',') {
        return RangeRequest::Full;
    }
    let Some((first, last)) = spec.split_once('-') else {
        return RangeRequest::Full;
    };
    let (first, last) = (first.trim(), last.trim());
    let number = |s: &str| -> Option<u64> {
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    if first.is_empty() {
        // Suffix range: the last N bytes.
        return match number(last) {
            Some(0) => RangeRequest::Unsatisfiable,
            Some(n) if len > 0 => RangeRequest::Partial {
                start: len.saturating_sub(n),
                end: len - 1,
            },
            Some(_) => RangeRequest::Unsatisfiable,
            None => RangeRequest::Full,
        };
    }
    let Some(start) = number(first) else {
        return RangeRequest::Full;
    };
    let end = if last.is_empty() {
        u64::MAX
    } else {
        match number(last) {
            Some(end) if end >= start => end,
            _ => return RangeRequest::Full,
        }
    };
    if start >= len {
        return RangeRequest::Unsatisfiable;
    }
    RangeRequest::Partial {
        start,
        end: end.min(len - 1),
    }
}

/// Streams bytes `start..=end` of the concatenation of `objects`, fetching one object (or the
/// needed slice of it) at a time, so memory stays at about one segment per download.
pub fn stream_objects(
    storage: Arc<Storage>,
    objects: Vec<ObjectInfo>,
    start: u64,
    end: u64,
) -> ReceiverStream<Result<Bytes, std::io::Error>> {
    let (tx, rx) = mpsc::channel(2);
    tokio::spawn(async move {
        let mut offset = 0u64;
        for object in objects {
            // The caller's total of these sizes fits in u64, so no offset overflows.
            let (object_start, object_end) = (offset, offset.saturating_add(object.size));
            offset = object_end;
            if object.size == 0 || object_end <= start || object_start > end {
                continue;
            }
            let from = start.saturating_sub(object_start);
            let to = (end - object_start).min(object.size - 1);
            let data = if from == 0 && to == object.size - 1 {
                storage.get(&object.key).await
            } else {
                storage.get_range(&object.key, from, to).await
            };
            let chunk = data.map_err(|e| {
                tracing::warn!(key = %object.key, error = %e, "download aborted: object unreadable");
                std::io::Error::other(e.to_string())
            });
            let failed = chunk.is_err();
            if tx.send(chunk).await.is_err() || failed {
                return;
            }
        }
    });
    ReceiverStream::new(rx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        use RangeRequest::*;
        assert_eq!(parse_range(None, 100), Full);
        assert_eq!(
            parse_range(Some("bytes=0-9"), 100),
            Partial { start: 0, end: 9 }
        );
        assert_eq!(
            parse_range(Some("bytes=90-"), 100),
            Partial { start: 90, end: 99 }
        );
        assert_eq!(
            parse_range(Some("bytes=90-1000"), 100),
            Partial { start: 90, end: 99 }
        );
        assert_eq!(
            parse_range(Some("bytes=-10"), 100),
            Partial { start: 90, end: 99 }
        );
        assert_eq!(
            parse_range(Some("bytes=-1000"), 100),
            Partial { start: 0, end: 99 }
        );
        assert_eq!(parse_range(Some("bytes=100-"), 100), Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=-0"), 100), Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=0-1,5-6"), 100), Full);
        assert_eq!(parse_range(Some("items=0-1"), 100), Full);
        assert_eq!(parse_range(Some("bytes=5-1"), 100), Full);
        assert_eq!(parse_range(Some("bytes=x-1"), 100), Full);
        assert_eq!(parse_range(Some("bytes=+1-2"), 100), Full);
        assert_eq!(
            parse_range(Some("BYTES=1-2"), 100),
            Partial { start: 1, end: 2 }
        );
    }

    proptest::proptest! {
        #[test]
        fn range_is_within_the_body(header in "\\PC{0,40}", len in 0u64..10_000) {
            if let RangeRequest::Partial { start, end } = parse_range(Some(&header), len) {
                proptest::prop_assert!(start <= end && end < len);
            }
        }

        #[test]
        fn numeric_ranges_are_within_the_body(a in 0u64..20_000, b in 0u64..20_000, len in 0u64..10_000) {
            let header = format!("bytes={a}-{b}");
            match parse_range(Some(&header), len) {
                RangeRequest::Partial { start, end } => {
                    proptest::prop_assert_eq!(start, a);
                    proptest::prop_assert_eq!(end, b.min(len - 1));
                }
                RangeRequest::Unsatisfiable => proptest::prop_assert!(a >= len),
                RangeRequest::Full => proptest::prop_assert!(b < a),
            }
        }
    }

    #[test]
    fn parts_follow_the_maps() {
        let playlist = b"#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:2\n\
#EXT-X-MAP:URI=\"init-0.mp4\"\n#EXTINF:2.0,\nseg-000000.m4s\n#EXTINF:2.0,\nseg-000001.m4s\n\
#EXT-X-DISCONTINUITY\n#EXT-X-MAP:URI=\"init-1.mp4\"\n#EXTINF:2.0,\nseg-000002.m4s\n#EXT-X-ENDLIST\n";
        let mut sizes = HashMap::new();
        for (name, size) in [
            ("init-0.mp4", 10),
            ("seg-000000.m4s", 100),
            ("seg-000001.m4s", 101),
            ("init-1.mp4", 11),
            ("seg-000002.m4s", 102),
        ] {
            sizes.insert(format!("a/s/{name}"), size);
        }
        let parts = download_parts("a/s/", playlist, &sizes).unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].len(), 3);
        assert_eq!(parts[0].iter().map(|o| o.size).sum::<u64>(), 211);
        assert_eq!(parts[1][0].key, "a/s/init-1.mp4");
        sizes.remove("a/s/seg-000001.m4s");
        assert_eq!(
            download_parts("a/s/", playlist, &sizes),
            Err(VodError::Missing("seg-000001.m4s".into()))
        );
        let evil = b"#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-MAP:URI=\"../../x\"\n#EXTINF:2.0,\nseg-000000.m4s\n";
        assert!(matches!(
            download_parts("a/s/", evil, &sizes),
            Err(VodError::Playlist(_))
        ));
    }

    #[tokio::test]
    async fn streams_a_byte_range_across_objects() {
        use tokio_stream::StreamExt;
        let dir = tempfile::tempdir().unwrap();
        let storage = Arc::new(Storage::Local(
            super::super::storage::LocalStore::for_tests(dir.path()),
        ));
        let mut objects = Vec::new();
        for (i, body) in ["abc", "defgh", "ij"].iter().enumerate() {
            let key = format!("u/s/seg-{i:06}.m4s");
            storage
                .put(&key, Bytes::from(body.as_bytes().to_vec()), "x")
                .await
                .unwrap();
            objects.push(ObjectInfo {
                key,
                size: body.len() as u64,
            });
        }
        for (start, end, expected) in [
            (0, 9, "abcdefghij"),
            (2, 6, "cdefg"),
            (3, 7, "defgh"),
            (9, 9, "j"),
        ] {
            let mut stream = stream_objects(storage.clone(), objects.clone(), start, end);
            let mut got = Vec::new();
            while let Some(chunk) = stream.next().await {
                got.extend_from_slice(&chunk.unwrap());
            }
            assert_eq!(String::from_utf8(got).unwrap(), expected, "{start}-{end}");
        }
    }
}
