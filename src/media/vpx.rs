//! Picture sizes from VP8 and VP9 keyframe headers: these codecs carry no configuration record,
//! so a track's [`VideoConfig`](super::VideoConfig) is built from its first keyframe. Hand-written:
//! a handful of header fields (RFC 6386 §9.1, VP9 bitstream spec §6.2), where the crates that
//! read them are whole decoders.

use super::bits::BitReader;

/// Width and height from a VP8 keyframe; None for an interframe or a malformed header.
pub fn vp8_keyframe_size(frame: &[u8]) -> Option<(u32, u32)> {
    // 3-byte frame tag: bit 0 of the first byte is 0 on a keyframe.
    let tag = frame.get(..3)?;
    if tag[0] & 1 != 0 {
        return None;
    }
    if frame.get(3..6)? != [0x9d, 0x01, 0x2a] {
        return None;
    }
    let w = u16::from_le_bytes([*frame.get(6)?, *frame.get(7)?]) & 0x3fff;
    let h = u16::from_le_bytes([*frame.get(8)?, *frame.get(9)?]) & 0x3fff;
    (w > 0 && h > 0).then_some((u32::from(w), u32::from(h)))
}

/// VP9 profile and picture size from a keyframe's uncompressed header (the first frame of a
/// superframe, which is where the keyframe sits); None for other frames or a malformed header.
pub fn vp9_keyframe_size(frame: &[u8]) -> Option<(u8, u32, u32)> {
    let mut r = BitReader::new(frame);
    if r.read(2)? != 2 {
        return None; // frame_marker
    }
    let low = r.read(1)?;
    let high = r.read(1)?;
    let profile = (high << 1 | low) as u8;
    if profile == 3 {
        r.skip(1)?; // reserved_zero
    }
    if r.flag()? {
        return None; // show_existing_frame
    }
    if r.flag()? {
        return None; // frame_type 1: not a keyframe
    }
    r.skip(2)?; // show_frame, error_resilient_mode
    if r.read(24)? != 0x49_83_42 {
        return None; // sync code
    }
    // color_config()
    if profile >= 2 {
        r.skip(1)?; // ten_or_twelve_bit
    }
    let color_space = r.read(3)?;
    if color_space != 7 {
        // not CS_RGB
        r.skip(1)?; // color_range
        if profile == 1 || profile == 3 {
            r.skip(3)?; // subsampling_x, subsampling_y, reserved_zero
        }
    } else if profile == 1 || profile == 3 {
        r.skip(1)?;
    }
    let w = r.read(16)? + 1;
    let h = r.read(16)? + 1;
    Some((profile, w, h))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The first bytes of a 640x480 keyframe from libvpx (`ffmpeg -c:v libvpx`).
    const VP8_KEY_640X480: &[u8] = &[0x50, 0x42, 0x00, 0x9d, 0x01, 0x2a, 0x80, 0x02, 0xe0, 0x01];

    #[test]
    fn vp8_sizes() {
        assert_eq!(vp8_keyframe_size(VP8_KEY_640X480), Some((640, 480)));
        let mut inter = VP8_KEY_640X480.to_vec();
        inter[0] |= 1;
        assert_eq!(vp8_keyframe_size(&inter), None);
        assert_eq!(vp8_keyframe_size(&VP8_KEY_640X480[..8]), None);
    }

    #[test]
    fn vp9_profile0_size() {
        // frame_marker 10, profile 0 (0,0), show_existing 0, frame_type 0, show_frame 1,
        // error_res 0 → 0b1000_0010; sync 49 83 42; color_space 2 (BT.709) + range 0 → 010 0;
        // width-1 = 639, height-1 = 479.
        let mut bits: Vec<bool> = Vec::new();
        let mut push = |v: u32, n: u32| {
            for i in (0..n).rev() {
                bits.push(v >> i & 1 == 1)
            }
        };
        push(0b1000_0010, 8);
        push(0x49_83_42, 24);
        push(0b010, 3);
        push(0, 1);
        push(639, 16);
        push(479, 16);
        let bytes: Vec<u8> = bits
            .chunks(8)
            .map(|c| {
                c.iter()
                    .enumerate()
                    .fold(0u8, |a, (i, b)| a | (u8::from(*b) << (7 - i)))
            })
            .collect();
        assert_eq!(vp9_keyframe_size(&bytes), Some((0, 640, 480)));
        // An interframe (frame_type 1).
        let mut inter = bytes.clone();
        inter[0] |= 0b0000_0100;
        assert_eq!(vp9_keyframe_size(&inter), None);
    }

    proptest! {
        #[test]
        fn never_panics(data in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = vp8_keyframe_size(&data);
            let _ = vp9_keyframe_size(&data);
        }
    }
}
