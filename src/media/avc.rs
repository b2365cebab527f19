//! H.264 decoder configuration (AVCDecoderConfigurationRecord, ISO/IEC 14496-15 §5.3.3),
//! read with `h264-reader`.

use bytes::Bytes;
use h264_reader::avcc::AvcDecoderConfigurationRecord;
use h264_reader::nal::sps::SeqParameterSet;
use h264_reader::nal::{Nal, RefNal};

use super::codec::{check_size, VideoCodec, VideoConfig};
use super::CodecError;

impl VideoConfig {
    /// An H.264 track from its AVCDecoderConfigurationRecord.
    pub fn h264(record: &[u8]) -> Result<VideoConfig, CodecError> {
        let err = |m: String| CodecError::Invalid(VideoCodec::H264, m);
        let avcc =
            AvcDecoderConfigurationRecord::try_from(record).map_err(|e| err(format!("{e:?}")))?;
        if avcc.configuration_version() != 1 {
            return Err(err(format!(
                "configuration version {} (expected 1)",
                avcc.configuration_version()
            )));
        }
        let sps_bytes = avcc
            .sequence_parameter_sets()
            .next()
            .ok_or_else(|| err("no SPS".into()))?
            .map_err(|e| err(format!("SPS: {e:?}")))?;
        // h264-reader's RefNal::new panics on an empty NAL unit.
        if sps_bytes.is_empty() {
            return Err(err("empty SPS".into()));
        }
        let nal = RefNal::new(sps_bytes, &[], true);
        let sps =
            SeqParameterSet::from_bits(nal.rbsp_bits()).map_err(|e| err(format!("SPS: {e:?}")))?;
        let (width, height) = sps
            .pixel_dimensions()
            .map_err(|e| err(format!("SPS dimensions: {e:?}")))?;
        check_size(VideoCodec::H264, width, height)?;
        let nal_length_size = avcc.length_size_minus_one() + 1;
        if nal_length_size == 3 {
            return Err(err("3-byte NAL lengths are not allowed".into()));
        }
        let fps = sps
            .fps()
            .filter(|f| f.is_finite() && *f > 0.0 && *f <= 480.0);
        let (profile, constraints) = (u8::from(sps.profile_idc), u8::from(sps.constraint_flags));
        Ok(VideoConfig {
            inband_parameters: false,
            codec: VideoCodec::H264,
            record: Bytes::copy_from_slice(record),
            width,
            height,
            fps,
            nal_length_size,
            rfc6381: format!("avc1.{profile:02x}{constraints:02x}{:02x}", sps.level_idc),
        })
    }
}

impl VideoConfig {
    /// An H.264 track's `profile_idc` and `level_idc` (from its SPS); `None` for other codecs.
    pub fn h264_profile_level(&self) -> Option<(u8, u8)> {
        if self.codec != VideoCodec::H264 {
            return None;
        }
        let hex = self.rfc6381.strip_prefix("avc1.")?;
        let byte = |at: usize| u8::from_str_radix(hex.get(at..at + 2)?, 16).ok();
        Some((byte(0)?, byte(4)?))
    }
}

/// The picture size an SPS NAL unit (with its header byte) declares.
pub(super) fn sps_size(nal: &[u8]) -> Option<(u32, u32)> {
    let nal = RefNal::new(nal, &[], true);
    let sps = SeqParameterSet::from_bits(nal.rbsp_bits()).ok()?;
    sps.pixel_dimensions().ok()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// avcC from `ffmpeg -f lavfi -i testsrc2=size=640x360 -c:v libx264 -profile:v high` (level 3.0).
    pub const AVCC_640X360_HIGH: &[u8] = &[
        0x01, 0x64, 0x00, 0x1e, 0xff, 0xe1, 0x00, 0x1a, 0x67, 0x64, 0x00, 0x1e, 0xac, 0xd9, 0x40,
        0xa0, 0x2f, 0xf9, 0x70, 0x11, 0x00, 0x00, 0x03, 0x00, 0x01, 0x00, 0x00, 0x03, 0x00, 0x3c,
        0x0f, 0x16, 0x2d, 0x96, 0x01, 0x00, 0x06, 0x68, 0xeb, 0xe3, 0xcb, 0x22, 0xc0, 0xfd, 0xf8,
        0xf8, 0x00,
    ];

    /// A baseline avcC whose SPS declares `mbs_w`×`mbs_h` macroblocks (16 pixels each) and
    /// nothing else: what a hostile publisher crafts in a few dozen bytes.
    pub(crate) fn avcc_sized(mbs_w: u32, mbs_h: u32) -> Vec<u8> {
        let mut bits: Vec<bool> = Vec::new();
        let mut put = |v: u32, n: u32| (0..n).rev().for_each(|i| bits.push(v >> i & 1 == 1));
        let ue = |put: &mut dyn FnMut(u32, u32), v: u32| {
            let len = 32 - (v + 1).leading_zeros();
            put(0, len - 1);
            put(v + 1, len);
        };
        put(66, 8); // profile_idc: baseline
        put(0, 8); // constraint flags
        put(62, 8); // level_idc: 6.2, the largest frame size H.264 allows
        ue(&mut put, 0); // seq_parameter_set_id
        ue(&mut put, 0); // log2_max_frame_num_minus4
        ue(&mut put, 2); // pic_order_cnt_type
        ue(&mut put, 1); // max_num_ref_frames
        put(0, 1); // gaps_in_frame_num_value_allowed_flag
        ue(&mut put, mbs_w - 1);
        ue(&mut put, mbs_h - 1);
        put(1, 1); // frame_mbs_only_flag
        put(1, 1); // direct_8x8_inference_flag
        put(0, 1); // frame_cropping_flag
        put(0, 1); // vui_parameters_present_flag
        put(1, 1); // rbsp_stop_one_bit
        while !bits.len().is_multiple_of(8) {
            bits.push(false);
        }
        let mut sps = vec![0x67];
        let mut zeros = 0;
        for byte in bits
            .chunks(8)
            .map(|b| b.iter().fold(0u8, |a, &x| a << 1 | u8::from(x)))
        {
            if zeros >= 2 && byte <= 3 {
                sps.push(3); // emulation prevention
                zeros = 0;
            }
            zeros = if byte == 0 { zeros + 1 } else { 0 };
            sps.push(byte);
        }
        let pps = [0x68, 0xce, 0x38, 0x80];
        let mut record = vec![1, 66, 0, 62, 0xff, 0xe1];
        record.extend_from_slice(&(sps.len() as u16).to_be_bytes());
        record.extend_from_slice(&sps);
        record.push(1);
        record.extend_from_slice(&(pps.len() as u16).to_be_bytes());
        record.extend_from_slice(&pps);
        record
    }

    #[test]
    fn crafted_records_declare_their_size() {
        let c = VideoConfig::h264(&avcc_sized(20, 15)).unwrap();
        assert_eq!((c.width, c.height), (320, 240));
        // The largest H.264 allows (139,264 macroblocks, level 6.2): 35.6 megapixels.
        let c = VideoConfig::h264(&avcc_sized(1024, 136)).unwrap();
        assert_eq!((c.width, c.height), (16384, 2176));
        assert!(VideoConfig::h264(&avcc_sized(1024, 1024)).is_err());
        assert!(VideoConfig::h264(&avcc_sized(1025, 1)).is_err());
    }

    #[test]
    fn profile_and_level_come_from_the_sps() {
        let config = VideoConfig::h264(AVCC_640X360_HIGH).unwrap();
        assert_eq!(config.h264_profile_level(), Some((100, 30)));
        let vp8 = VideoConfig::from_frame_size(VideoCodec::Vp8, 640, 360).unwrap();
        assert_eq!(vp8.h264_profile_level(), None);
    }

    #[test]
    fn in_band_sps_sizes_are_read_from_frames() {
        let config = VideoConfig::h264(AVCC_640X360_HIGH).unwrap();
        let huge = avcc_sized(1024, 136);
        let sps = &huge[8..8 + usize::from(u16::from_be_bytes([huge[6], huge[7]]))];
        // A frame: an AUD, the SPS, then a slice; 4-byte lengths as the record says.
        let mut frame = Vec::new();
        for nal in [&[0x09, 0xf0][..], sps, &[0x65, 0x88, 0x84][..]] {
            frame.extend_from_slice(&(nal.len() as u32).to_be_bytes());
            frame.extend_from_slice(nal);
        }
        let size = crate::media::codec::inband_sps_size(&config, &frame);
        assert_eq!(size, Some((16384, 2176)));
        assert_eq!(
            crate::media::codec::inband_sps_size(&config, &frame[..20]),
            None
        );
        assert_eq!(
            crate::media::codec::inband_sps_size(&config, &frame[17..]),
            None
        );
    }

    proptest::proptest! {
        #[test]
        fn in_band_scan_never_panics(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256)) {
            let config = VideoConfig::h264(AVCC_640X360_HIGH).unwrap();
            let _ = crate::media::codec::inband_sps_size(&config, &data);
        }
    }

    #[test]
    fn parses_real_record() {
        let c = VideoConfig::h264(AVCC_640X360_HIGH).unwrap();
        assert_eq!((c.width, c.height), (640, 360));
        assert_eq!(c.codec_string(), "avc1.64001e");
        assert_eq!(c.nal_length_size, 4);
        assert_eq!(c.fps, Some(30.0));
    }

    #[test]
    fn malformed_records_are_errors() {
        assert!(VideoConfig::h264(&[]).is_err());
        assert!(VideoConfig::h264(&AVCC_640X360_HIGH[..10]).is_err());
        let mut wrong_version = AVCC_640X360_HIGH.to_vec();
        wrong_version[0] = 2;
        assert!(VideoConfig::h264(&wrong_version).is_err());
        let mut no_sps = AVCC_640X360_HIGH[..6].to_vec();
        no_sps[5] = 0xe0;
        no_sps.push(0);
        assert!(VideoConfig::h264(&no_sps).is_err());
    }

    /// Fuzz finding (avc_config): an avcC whose SPS has length 0 reached h264-reader's
    /// `RefNal::new`, which panics on an empty NAL unit ("RefNal must be non-empty").
    #[test]
    fn an_empty_sps_is_an_error_not_a_panic() {
        // The fuzzer's input: one SPS of length 0, then PPS entries.
        let mut record = vec![0x01, 0x0a, 0x42, 0xc0, 0xff, 0xe1, 0x00, 0x00, 0x07];
        record.resize(0x77, 0);
        record.extend_from_slice(&[0x03, 0x00, 0x00, 0x00, 0x02]);
        assert!(VideoConfig::h264(&record).is_err());
    }

    proptest::proptest! {
        #[test]
        fn never_panics(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64)) {
            let _ = VideoConfig::h264(&data);
        }

        #[test]
        fn mutated_record_never_panics(idx in 0usize..47, byte in proptest::prelude::any::<u8>()) {
            let mut data = AVCC_640X360_HIGH.to_vec();
            data[idx] = byte;
            let _ = VideoConfig::h264(&data);
        }
    }
}
