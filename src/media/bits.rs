//! MSB-first bit reading for the few header fields livegate parses itself (AAC
//! AudioSpecificConfig, the HEVC SPS size fields, the AV1 sequence header): each needs a dozen
//! fields, and the crates that cover them bring whole demuxers. Every read returns `None` past
//! the end instead of panicking.

pub struct BitReader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> BitReader<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        BitReader { data, pos: 0 }
    }

    /// Reads `count` ≤ 32 bits.
    pub fn read(&mut self, count: u32) -> Option<u32> {
        if count > 32 {
            return None;
        }
        let mut value = 0u64;
        for _ in 0..count {
            let byte = *self.data.get(self.pos / 8)?;
            let bit = (byte >> (7 - (self.pos % 8))) & 1;
            value = (value << 1) | u64::from(bit);
            self.pos += 1;
        }
        u32::try_from(value).ok()
    }

    pub fn flag(&mut self) -> Option<bool> {
        self.read(1).map(|b| b == 1)
    }

    pub fn skip(&mut self, count: usize) -> Option<()> {
        if self.pos + count > self.data.len() * 8 {
            return None;
        }
        self.pos += count;
        Some(())
    }

    /// Exp-Golomb unsigned (H.264/HEVC `ue(v)`), up to 32 leading zeros.
    pub fn ue(&mut self) -> Option<u32> {
        let mut zeros = 0;
        while !self.flag()? {
            zeros += 1;
            if zeros > 31 {
                return None;
            }
        }
        let rest = self.read(zeros)?;
        u32::try_from((1u64 << zeros) - 1 + u64::from(rest)).ok()
    }

    /// AV1 `uvlc()`.
    pub fn uvlc(&mut self) -> Option<u32> {
        self.ue()
    }
}

/// Removes H.264/HEVC emulation-prevention bytes (`00 00 03` → `00 00`).
pub fn unescape_rbsp(nal: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(nal.len());
    let mut zeros = 0;
    for &b in nal {
        if zeros >= 2 && b == 3 {
            zeros = 0;
            continue;
        }
        zeros = if b == 0 { zeros + 1 } else { 0 };
        out.push(b);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_bits_and_golomb() {
        // 1 | 010 | 011 | 00100 → ue 0, 1, 2, 3
        let mut r = BitReader::new(&[0b1010_0110, 0b0100_0000]);
        assert_eq!(r.ue(), Some(0));
        assert_eq!(r.ue(), Some(1));
        assert_eq!(r.ue(), Some(2));
        assert_eq!(r.ue(), Some(3));
        assert_eq!(r.read(8), None);
    }

    #[test]
    fn unescapes() {
        assert_eq!(unescape_rbsp(&[0, 0, 3, 1, 0, 0, 3]), vec![0, 0, 1, 0, 0]);
    }

    proptest::proptest! {
        #[test]
        fn never_panics(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..16), n in 0u32..40) {
            let mut r = BitReader::new(&data);
            let _ = r.read(n);
            let _ = r.ue();
            let _ = r.skip(n as usize);
        }
    }
}
