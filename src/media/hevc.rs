//! HEVC decoder configuration (HEVCDecoderConfigurationRecord, ISO/IEC 14496-15 §8.3.3): the
//! length size and codec string from the record, the picture size from its SPS (ITU-T H.265
//! §7.3.2.2). Only these fields are read, which no maintained crate offers without a demuxer.

use bytes::Bytes;

use super::bits::{unescape_rbsp, BitReader};
use super::codec::{check_size, VideoCodec, VideoConfig};
use super::CodecError;

const NAL_SPS: u8 = 33;

impl VideoConfig {
    /// An HEVC track from its `hvcC` record.
    pub fn hevc(record: &[u8]) -> Result<VideoConfig, CodecError> {
        let err = |m: &str| CodecError::Invalid(VideoCodec::Hevc, m.to_string());
        if record.len() < 23 {
            return Err(err("record shorter than its 23-byte header"));
        }
        if record[0] != 1 {
            return Err(err(&format!(
                "configuration version {} (expected 1)",
                record[0]
            )));
        }
        let nal_length_size = (record[21] & 0x03) + 1;
        if nal_length_size == 3 {
            return Err(err("3-byte NAL lengths are not allowed"));
        }
        let sps = find_sps(record).ok_or_else(|| err("no SPS"))?;
        let (width, height) = sps_size(sps).ok_or_else(|| err("unreadable SPS"))?;
        check_size(VideoCodec::Hevc, width, height)?;
        Ok(VideoConfig {
            inband_parameters: false,
            codec: VideoCodec::Hevc,
            record: Bytes::copy_from_slice(record),
            width,
            height,
            fps: None,
            nal_length_size,
            rfc6381: codec_string(record),
        })
    }
}

/// The first SPS NAL unit in the record's arrays.
fn find_sps(record: &[u8]) -> Option<&[u8]> {
    let arrays = *record.get(22)?;
    let mut at = 23;
    for _ in 0..arrays {
        let kind = record.get(at)? & 0x3f;
        let count = u16::from_be_bytes([*record.get(at + 1)?, *record.get(at + 2)?]);
        at += 3;
        for _ in 0..count {
            let len = usize::from(u16::from_be_bytes([*record.get(at)?, *record.get(at + 1)?]));
            let nal = record.get(at + 2..at + 2 + len)?;
            if kind == NAL_SPS {
                return Some(nal);
            }
            at += 2 + len;
        }
    }
    None
}

/// The cropped picture size from an SPS NAL unit (with its 2-byte header).
pub(super) fn sps_size(nal: &[u8]) -> Option<(u32, u32)> {
    let rbsp = unescape_rbsp(nal.get(2..)?);
    let mut r = BitReader::new(&rbsp);
    r.skip(4)?; // sps_video_parameter_set_id
    let max_sub_layers_minus1 = r.read(3)? as usize;
    r.skip(1)?; // sps_temporal_id_nesting_flag
                // profile_tier_level(1, max_sub_layers_minus1): general profile (88 bits) and level (8).
    r.skip(96)?;
    let mut present = Vec::with_capacity(max_sub_layers_minus1);
    for _ in 0..max_sub_layers_minus1 {
        present.push((r.flag()?, r.flag()?));
    }
    if max_sub_layers_minus1 > 0 {
        r.skip(2 * (8 - max_sub_layers_minus1))?;
    }
    for (profile, level) in present {
        if profile {
            r.skip(88)?;
        }
        if level {
            r.skip(8)?;
        }
    }
    r.ue()?; // sps_seq_parameter_set_id
    let chroma_format_idc = r.ue()?;
    if chroma_format_idc == 3 {
        r.skip(1)?; // separate_colour_plane_flag
    }
    let width = r.ue()?;
    let height = r.ue()?;
    if !r.flag()? {
        return Some((width, height));
    }
    let (sub_w, sub_h) = match chroma_format_idc {
        1 => (2, 2),
        2 => (2, 1),
        _ => (1, 1),
    };
    let (left, right, top, bottom) = (r.ue()?, r.ue()?, r.ue()?, r.ue()?);
    let crop_w = sub_w * (u64::from(left) + u64::from(right));
    let crop_h = sub_h * (u64::from(top) + u64::from(bottom));
    let width = u64::from(width).checked_sub(crop_w)?;
    let height = u64::from(height).checked_sub(crop_h)?;
    Some((u32::try_from(width).ok()?, u32::try_from(height).ok()?))
}

/// RFC 6381 / ISO/IEC 14496-15 Annex E string, e.g. `hvc1.1.6.L60.90`.
fn codec_string(record: &[u8]) -> String {
    let space = match record[1] >> 6 {
        1 => "A",
        2 => "B",
        3 => "C",
        _ => "",
    };
    let tier = if record[1] & 0x20 != 0 { 'H' } else { 'L' };
    let profile = record[1] & 0x1f;
    let compatibility = u32::from_be_bytes([record[2], record[3], record[4], record[5]]);
    let mut s = format!(
        "hvc1.{space}{profile}.{:x}.{tier}{}",
        compatibility.reverse_bits(),
        record[12]
    );
    let constraints = &record[6..12];
    let used = constraints
        .iter()
        .rposition(|&b| b != 0)
        .map_or(0, |i| i + 1);
    for b in &constraints[..used] {
        s.push_str(&format!(".{b:x}"));
    }
    s
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// `hvcC` of `ffmpeg -f lavfi -i testsrc2=size=426x240 -c:v libx265` (Main, level 2).
    pub const HVCC_426X240: &[u8] = include_bytes!("testdata/hvcc_426x240.bin");

    #[test]
    fn parses_real_record() {
        let c = VideoConfig::hevc(HVCC_426X240).unwrap();
        assert_eq!(c.codec, VideoCodec::Hevc);
        assert_eq!((c.width, c.height), (426, 240));
        assert_eq!(c.nal_length_size, 4);
        assert_eq!(c.codec_string(), "hvc1.1.6.L60.90");
    }

    #[test]
    fn malformed_records_are_errors() {
        assert!(VideoConfig::hevc(&[]).is_err());
        assert!(VideoConfig::hevc(&HVCC_426X240[..30]).is_err());
        let mut wrong_version = HVCC_426X240.to_vec();
        wrong_version[0] = 0;
        assert!(VideoConfig::hevc(&wrong_version).is_err());
        let mut no_arrays = HVCC_426X240[..23].to_vec();
        no_arrays[22] = 0;
        assert!(VideoConfig::hevc(&no_arrays).is_err());
    }

    proptest::proptest! {
        #[test]
        fn never_panics(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..128)) {
            let _ = VideoConfig::hevc(&data);
        }

        #[test]
        fn mutated_record_never_panics(idx in 0usize..112, byte in proptest::prelude::any::<u8>()) {
            let mut data = HVCC_426X240.to_vec();
            data[idx] = byte;
            let _ = VideoConfig::hevc(&data);
        }
    }
}
