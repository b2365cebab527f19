//! x264 (through libavcodec with global headers) emits Annex B: start-code-delimited NAL units,
//! and SPS/PPS as extradata. CMAF wants length-prefixed NAL units and an avcC record. Hand-written:
//! two dozen lines with no crate that does just this.

use bytes::{BufMut, Bytes, BytesMut};

/// Splits Annex B data into NAL units (without start codes).
pub fn nal_units(data: &[u8]) -> Vec<&[u8]> {
    let mut units = Vec::new();
    let mut i = 0;
    let mut start: Option<usize> = None;
    while i + 3 <= data.len() {
        if data[i] == 0 && data[i + 1] == 0 && data[i + 2] == 1 {
            if let Some(s) = start {
                let mut end = i;
                while end > s && data[end - 1] == 0 {
                    end -= 1; // trailing zero of a 4-byte start code
                }
                if end > s {
                    units.push(&data[s..end]);
                }
            }
            i += 3;
            start = Some(i);
        } else {
            i += 1;
        }
    }
    if let Some(s) = start {
        if s < data.len() {
            units.push(&data[s..]);
        }
    }
    units
}

/// Annex B → 4-byte length-prefixed NAL units. Parameter sets are dropped (they live in avcC).
pub fn to_avcc(data: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(data.len() + 16);
    for nal in nal_units(data) {
        let kind = nal[0] & 0x1f;
        if kind == 7 || kind == 8 {
            continue;
        }
        out.put_u32(nal.len() as u32);
        out.put_slice(nal);
    }
    out.freeze()
}

/// Builds an AVCDecoderConfigurationRecord (4-byte NAL lengths) from Annex B SPS/PPS.
pub fn avcc_record(extradata: &[u8]) -> Option<Bytes> {
    let units = nal_units(extradata);
    let sps: Vec<&[u8]> = units.iter().copied().filter(|n| n[0] & 0x1f == 7).collect();
    let pps: Vec<&[u8]> = units.iter().copied().filter(|n| n[0] & 0x1f == 8).collect();
    let first = sps.first()?;
    if first.len() < 4 || pps.is_empty() {
        return None;
    }
    let mut out = BytesMut::new();
    out.put_u8(1);
    out.put_slice(&first[1..4]); // profile, constraint flags, level
    out.put_u8(0xff); // 4-byte lengths
    out.put_u8(0xe0 | sps.len() as u8);
    for s in &sps {
        out.put_u16(s.len() as u16);
        out.put_slice(s);
    }
    out.put_u8(pps.len() as u8);
    for p in &pps {
        out.put_u16(p.len() as u16);
        out.put_slice(p);
    }
    Some(out.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::VideoConfig;

    #[test]
    fn splits_three_and_four_byte_start_codes() {
        let data = [
            0, 0, 0, 1, 0x67, 1, 2, 0, 0, 1, 0x68, 3, 0, 0, 0, 1, 0x65, 9, 9,
        ];
        assert_eq!(
            nal_units(&data),
            vec![&[0x67, 1, 2][..], &[0x68, 3][..], &[0x65, 9, 9][..]]
        );
        assert_eq!(&to_avcc(&data)[..], &[0, 0, 0, 3, 0x65, 9, 9]);
        assert!(nal_units(&[1, 2, 3]).is_empty());
    }

    #[test]
    fn builds_a_record_the_parser_accepts() {
        // SPS/PPS of the 640x360 High fixture, as Annex B.
        let record = crate::media::avc::tests::AVCC_640X360_HIGH;
        let sps = &record[8..8 + 26];
        let pps = &record[8 + 26 + 3..8 + 26 + 3 + 6];
        let mut annexb = vec![0, 0, 0, 1];
        annexb.extend_from_slice(sps);
        annexb.extend_from_slice(&[0, 0, 0, 1]);
        annexb.extend_from_slice(pps);
        let built = avcc_record(&annexb).unwrap();
        let parsed = VideoConfig::h264(&built).unwrap();
        assert_eq!((parsed.width, parsed.height), (640, 360));
        assert_eq!(parsed.codec_string(), "avc1.64001e");
        assert!(avcc_record(&[0, 0, 1, 0x68, 1]).is_none());
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200)) {
            let _ = to_avcc(&data);
            let _ = avcc_record(&data);
        }
    }
}
