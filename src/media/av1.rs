//! AV1 codec configuration (AV1CodecConfigurationRecord, the `av1C` of the AV1 ISOBMFF binding
//! §2.3): profile, level and bit depth from its 4-byte header, the maximum picture size from the
//! sequence header OBU it carries (AV1 spec §5.5). Only these fields are read.

use bytes::Bytes;

use super::bits::BitReader;
use super::codec::{check_size, VideoCodec, VideoConfig};
use super::CodecError;

const OBU_SEQUENCE_HEADER: u8 = 1;

impl VideoConfig {
    /// An AV1 track from its `av1C` record (which must carry the sequence header OBU, as every
    /// encoder livegate knows writes it).
    pub fn av1(record: &[u8]) -> Result<VideoConfig, CodecError> {
        let err = |m: &str| CodecError::Invalid(VideoCodec::Av1, m.to_string());
        if record.len() < 4 {
            return Err(err("record shorter than its 4-byte header"));
        }
        if record[0] != 0x81 {
            return Err(err("marker/version is not 1/1"));
        }
        let header = sequence_header(&record[4..])
            .ok_or_else(|| err("no sequence header OBU in the record"))?;
        let (width, height) =
            max_frame_size(header).ok_or_else(|| err("unreadable sequence header"))?;
        check_size(VideoCodec::Av1, width, height)?;
        Ok(VideoConfig {
            inband_parameters: false,
            codec: VideoCodec::Av1,
            record: Bytes::copy_from_slice(record),
            width,
            height,
            fps: None,
            nal_length_size: 0,
            rfc6381: codec_string(record),
        })
    }
}

/// Iterates low-overhead-format OBUs: (type, payload).
pub fn obus(mut data: &[u8]) -> impl Iterator<Item = (u8, &[u8])> {
    std::iter::from_fn(move || {
        let header = *data.first()?;
        let kind = (header >> 3) & 0x0f;
        let has_extension = header & 0x04 != 0;
        let has_size = header & 0x02 != 0;
        let mut at = 1 + usize::from(has_extension);
        let size = if has_size {
            let (size, used) = leb128(data.get(at..)?)?;
            at += used;
            usize::try_from(size).ok()?
        } else {
            data.len().checked_sub(at)?
        };
        let payload = data.get(at..at.checked_add(size)?)?;
        data = &data[at + size..];
        Some((kind, payload))
    })
}

/// Whether `data` is a whole number of OBUs, each with its size field (the ISOBMFF/RTMP sample
/// format), the last ending exactly at the end.
pub fn is_well_formed(data: &[u8]) -> bool {
    let mut rest = data;
    while let Some(&header) = rest.first() {
        if header & 0x80 != 0 || header & 0x02 == 0 {
            return false; // forbidden bit, or no size field
        }
        let at = 1 + usize::from(header & 0x04 != 0);
        let Some((size, used)) = rest.get(at..).and_then(leb128) else {
            return false;
        };
        let Some(end) = usize::try_from(size)
            .ok()
            .and_then(|s| s.checked_add(at + used))
        else {
            return false;
        };
        let Some(next) = rest.get(end..) else {
            return false;
        };
        rest = next;
    }
    !data.is_empty()
}

fn leb128(data: &[u8]) -> Option<(u64, usize)> {
    let mut value = 0u64;
    for (i, b) in data.iter().take(8).enumerate() {
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

fn sequence_header(config_obus: &[u8]) -> Option<&[u8]> {
    obus(config_obus)
        .find(|(kind, _)| *kind == OBU_SEQUENCE_HEADER)
        .map(|(_, payload)| payload)
}

/// `max_frame_width_minus_1 + 1` and the height, read through the fields before them.
fn max_frame_size(header: &[u8]) -> Option<(u32, u32)> {
    let mut r = BitReader::new(header);
    r.skip(3)?; // seq_profile
    r.skip(1)?; // still_picture
    if r.flag()? {
        // reduced_still_picture_header
        r.skip(5)?; // seq_level_idx[0]
    } else {
        let mut decoder_model_info = false;
        let mut buffer_delay_length = 0;
        if r.flag()? {
            // timing_info
            r.skip(64)?;
            if r.flag()? {
                r.uvlc()?;
            }
            decoder_model_info = r.flag()?;
            if decoder_model_info {
                buffer_delay_length = r.read(5)? as usize + 1;
                r.skip(32 + 5 + 5)?;
            }
        }
        let initial_display_delay = r.flag()?;
        let operating_points = r.read(5)? + 1;
        for _ in 0..operating_points {
            r.skip(12)?; // operating_point_idc
            if r.read(5)? > 7 {
                r.skip(1)?; // seq_tier
            }
            if decoder_model_info && r.flag()? {
                r.skip(2 * buffer_delay_length + 1)?;
            }
            if initial_display_delay && r.flag()? {
                r.skip(4)?;
            }
        }
    }
    let width_bits = r.read(4)? + 1;
    let height_bits = r.read(4)? + 1;
    let width = u64::from(r.read(width_bits)?) + 1;
    let height = u64::from(r.read(height_bits)?) + 1;
    Some((u32::try_from(width).ok()?, u32::try_from(height).ok()?))
}

/// RFC 6381 string per the AV1 ISOBMFF binding, e.g. `av01.0.04M.08`.
fn codec_string(record: &[u8]) -> String {
    let profile = record[1] >> 5;
    let level = record[1] & 0x1f;
    let tier = if record[2] & 0x80 != 0 { 'H' } else { 'M' };
    let depth = match (record[2] & 0x40 != 0, record[2] & 0x20 != 0) {
        (true, true) => 12,
        (true, false) => 10,
        _ => 8,
    };
    format!("av01.{profile}.{level:02}{tier}.{depth:02}")
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// `av1C` of `ffmpeg -f lavfi -i testsrc2=size=426x240 -c:v libsvtav1` (SVT-AV1 1.4).
    pub const AV1C_426X240: &[u8] = include_bytes!("testdata/av1c_426x240.bin");

    #[test]
    fn parses_real_record() {
        let c = VideoConfig::av1(AV1C_426X240).unwrap();
        assert_eq!(c.codec, VideoCodec::Av1);
        assert_eq!((c.width, c.height), (426, 240));
        assert_eq!(c.codec_string(), "av01.0.00M.08");
    }

    #[test]
    fn malformed_records_are_errors() {
        assert!(VideoConfig::av1(&[]).is_err());
        assert!(VideoConfig::av1(&AV1C_426X240[..4]).is_err());
        let mut wrong_marker = AV1C_426X240.to_vec();
        wrong_marker[0] = 0x01;
        assert!(VideoConfig::av1(&wrong_marker).is_err());
    }

    #[test]
    fn reads_obus_with_and_without_size() {
        // Temporal delimiter (type 2, has_size, size 0), then a padding OBU (type 15) without size.
        let data = [0x12, 0x00, 0x78, 0xaa, 0xbb];
        let v: Vec<_> = obus(&data).collect();
        assert_eq!(v, vec![(2, &[][..]), (15, &[0xaa, 0xbb][..])]);
    }

    #[test]
    fn well_formed_frames_need_sized_obus_that_fill_them() {
        assert!(is_well_formed(&[0x12, 0x00, 0x32, 0x02, 0xaa, 0xbb]));
        assert!(!is_well_formed(&[0x12, 0x00, 0x32, 0x03, 0xaa, 0xbb])); // too short
        assert!(!is_well_formed(&[0x78, 0xaa])); // no size field
        assert!(!is_well_formed(&[]));
    }

    proptest::proptest! {
        #[test]
        fn never_panics(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64)) {
            let _ = VideoConfig::av1(&data);
            let _ = obus(&data).count();
            let _ = is_well_formed(&data);
        }

        #[test]
        fn mutated_record_never_panics(idx in 0usize..17, byte in proptest::prelude::any::<u8>()) {
            let mut data = AV1C_426X240.to_vec();
            data[idx] = byte;
            let _ = VideoConfig::av1(&data);
        }
    }
}
