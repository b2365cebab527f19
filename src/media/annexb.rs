//! Annex B (start-code-delimited NAL units: x264's output, RTP depacketizers' natural form) ↔
//! length-prefixed NAL units (the payload format of H.264/HEVC [`Packet`](super::Packet)s, as in
//! MP4, FLV and CMAF), and the avcC record from Annex B parameter sets. Hand-written: a few dozen
//! lines with no crate that does just this.

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

/// H.264 Annex B → 4-byte length-prefixed NAL units. Parameter sets are dropped (they live in
/// the avcC). H.264 only: it reads the 1-byte H.264 NAL header (HEVC's is 2 bytes, other types).
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

/// Length-prefixed NAL units (`length_size` of 1, 2 or 4 bytes) → Annex B with 4-byte start
/// codes. None if a length points past the end (or the size is not 1, 2 or 4).
pub fn to_annex_b(data: &[u8], length_size: u8) -> Option<Bytes> {
    let size = usize::from(length_size);
    if !matches!(size, 1 | 2 | 4) {
        return None;
    }
    let mut out = BytesMut::with_capacity(data.len() + 16);
    let mut pos = 0;
    while pos < data.len() {
        let prefix = data.get(pos..pos + size)?;
        let len = prefix
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        pos += size;
        let nal = data.get(pos..pos.checked_add(len)?)?;
        out.put_slice(&[0, 0, 0, 1]);
        out.put_slice(nal);
        pos += len;
    }
    Some(out.freeze())
}

/// Builds an AVCDecoderConfigurationRecord (4-byte NAL lengths) from Annex B SPS/PPS.
pub fn avcc_record(extradata: &[u8]) -> Option<Bytes> {
    let units = nal_units(extradata);
    let sps: Vec<&[u8]> = units.iter().copied().filter(|n| n[0] & 0x1f == 7).collect();
    let pps: Vec<&[u8]> = units.iter().copied().filter(|n| n[0] & 0x1f == 8).collect();
    let first = sps.first()?;
    // The record counts SPSs in 5 bits and PPSs in 8, and gives each a 16-bit length: what does
    // not fit has no record (a truncated one would describe other bytes).
    let fits = |n: &&[u8]| u16::try_from(n.len()).is_ok();
    if first.len() < 4
        || pps.is_empty()
        || sps.len() > 31
        || pps.len() > 255
        || !sps.iter().chain(&pps).all(fits)
    {
        return None;
    }
    let mut out = BytesMut::new();
    out.put_u8(1);
    out.put_slice(&first[1..4]); // profile, constraint flags, level
    out.put_u8(0xff); // 4-byte lengths
    out.put_u8(0xe0 | sps.len() as u8);
    for s in &sps {
        out.put_u16(s.len() as u16); // checked above
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

        // What the record's fields cannot describe has no record: an SPS over 64 KiB, 32 SPSs.
        let mut huge = annexb.clone();
        huge.extend_from_slice(&[0, 0, 0, 1, 0x67]);
        huge.extend(std::iter::repeat_n(0x11, 70_000));
        assert!(avcc_record(&huge).is_none());
        let mut many = Vec::new();
        for _ in 0..32 {
            many.extend_from_slice(&[0, 0, 0, 1]);
            many.extend_from_slice(sps);
        }
        many.extend_from_slice(&[0, 0, 0, 1]);
        many.extend_from_slice(pps);
        assert!(avcc_record(&many).is_none());
        assert!(avcc_record(&many[(sps.len() + 4) * 2..]).is_some());
    }

    #[test]
    fn length_prefixed_to_annex_b_and_back() {
        let prefixed = [0, 0, 0, 3, 0x65, 9, 9, 0, 0, 0, 2, 0x41, 7];
        let annex_b = to_annex_b(&prefixed, 4).unwrap();
        assert_eq!(&annex_b[..], &[0, 0, 0, 1, 0x65, 9, 9, 0, 0, 0, 1, 0x41, 7]);
        assert_eq!(&to_avcc(&annex_b)[..], &prefixed[..]);
        assert_eq!(
            &to_annex_b(&[0, 2, 0x65, 1], 2).unwrap()[..],
            &[0, 0, 0, 1, 0x65, 1]
        );
        assert!(to_annex_b(&[0, 0, 0, 9, 0x65], 4).is_none());
        assert!(to_annex_b(&prefixed, 3).is_none());
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200),
                                       size in 0u8..6) {
            let _ = to_avcc(&data);
            let _ = avcc_record(&data);
            let _ = to_annex_b(&data, size);
        }

        /// NAL units without start-code-like bytes survive the round trip.
        #[test]
        fn round_trips(nals in proptest::collection::vec(
            proptest::collection::vec(4u8..=255, 1..40), 1..8)) {
            let mut prefixed = Vec::new();
            for n in &nals {
                prefixed.extend_from_slice(&(n.len() as u32).to_be_bytes());
                prefixed.extend_from_slice(n);
            }
            let back = to_avcc(&to_annex_b(&prefixed, 4).unwrap());
            // to_avcc drops SPS/PPS (types 7, 8); compare with those removed.
            let kept: Vec<u8> = nals.iter().filter(|n| !matches!(n[0] & 0x1f, 7 | 8)).flat_map(|n| {
                let mut v = (n.len() as u32).to_be_bytes().to_vec();
                v.extend_from_slice(n);
                v
            }).collect();
            proptest::prop_assert_eq!(&back[..], &kept[..]);
        }
    }
}
