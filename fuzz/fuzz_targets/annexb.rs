//! Annex B ↔ length-prefixed NAL units (`media::annexb`): what RTP depacketizers and encoders
//! produce, converted to the payload format every packet carries.
//!
//! Contract: no panic; output sizes are bounded by the input; the conversions round-trip:
//! `to_avcc` always yields well-formed 4-byte-length-prefixed units, which `to_annex_b` takes
//! back without loss (`to_avcc ∘ to_annex_b ∘ to_avcc = to_avcc`); any length-prefixed input
//! `to_annex_b` accepts has its units in the output, in order, behind start codes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use livegate::media::annexb;

/// Splits 4-byte length-prefixed data (which must be well-formed) into units.
fn units(mut data: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    while !data.is_empty() {
        let len = u32::from_be_bytes(data[..4].try_into().unwrap()) as usize;
        out.push(&data[4..4 + len]);
        data = &data[4 + len..];
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, data)) = data.split_first() else {
        return;
    };

    // Annex B in.
    let nals = annexb::nal_units(data);
    let nal_bytes: usize = nals.iter().map(|n| n.len()).sum();
    assert!(nal_bytes <= data.len());
    assert!(nals.iter().all(|n| !n.is_empty()));
    let prefixed = annexb::to_avcc(data);
    // Every NAL unit is behind a 3+ byte start code in the input and a 4-byte length out.
    assert!(prefixed.len() <= data.len() + nals.len());
    let annex_b = annexb::to_annex_b(&prefixed, 4).expect("to_avcc output is well-formed");
    assert_eq!(annexb::to_avcc(&annex_b), prefixed, "round trip");
    let kept: Vec<&[u8]> = nals
        .iter()
        .copied()
        .filter(|n| !matches!(n[0] & 0x1f, 7 | 8))
        .collect();
    assert_eq!(units(&prefixed), kept);

    // Length-prefixed in, with the length size the selector picks (1, 2, 4 or invalid).
    let size = [1u8, 2, 4, 3, 0][usize::from(selector % 5)];
    if let Some(out) = annexb::to_annex_b(data, size) {
        assert!(matches!(size, 1 | 2 | 4));
        let size = usize::from(size);
        let (mut pos, mut at) = (0, 0);
        while pos < data.len() {
            let len = data[pos..pos + size]
                .iter()
                .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
            pos += size;
            assert_eq!(&out[at..at + 4], &[0, 0, 0, 1]);
            assert_eq!(&out[at + 4..at + 4 + len], &data[pos..pos + len]);
            at += 4 + len;
            pos += len;
        }
        assert_eq!(at, out.len());
    }

    // An avcC built from Annex B parameter sets is what the H.264 parser reads back.
    if let Some(record) = annexb::avcc_record(data) {
        let _ = livegate::media::VideoConfig::h264(&record);
    }
});
