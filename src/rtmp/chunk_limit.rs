//! The cap on one RTMP message, enforced before its bytes are buffered.
//!
//! rml_rtmp reassembles chunks into messages of any length the 24-bit header allows (16 MiB),
//! reserving the whole length on the first chunk, and has no setting to lower it. This follows
//! the chunk stream exactly as its deserializer does (basic header, the four header formats,
//! extended timestamps, one message in progress at a time, Set Chunk Size) but keeps only the
//! header fields it needs, and refuses a header that announces a message over the cap, so the
//! session ends before anything of it is buffered. Sans-IO: bytes in, verdict out.

use std::collections::HashMap;

/// RTMP's initial chunk size.
const INITIAL_CHUNK_SIZE: u32 = 128;
/// A timestamp field of this value means a 4-byte extended timestamp follows.
const EXTENDED_TIMESTAMP: u32 = 0xFF_FFFF;
/// Set Chunk Size's message type.
const SET_CHUNK_SIZE: u8 = 1;
/// Chunk streams tracked at most (the basic header allows 65,599): a peer opening more is not
/// an encoder.
const MAX_CHUNK_STREAMS: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChunkLimitError {
    #[error("an RTMP message of {length} bytes (at most {max})")]
    MessageTooLarge { length: u32, max: u32 },
    #[error("an RTMP chunk on chunk stream {0} without a previous header")]
    NoPreviousHeader(u32),
    #[error("more than {MAX_CHUNK_STREAMS} RTMP chunk streams")]
    TooManyChunkStreams,
}

#[derive(Debug, Clone, Copy, Default)]
struct Header {
    length: u32,
    type_id: u8,
    timestamp_field: u32,
}

#[derive(Debug)]
pub struct ChunkLimit {
    max_message: u32,
    chunk_size: u32,
    /// Bytes of the chunk header being read (at most 3 + 11 + 4).
    header: Vec<u8>,
    /// Payload bytes left in the current chunk (0: a header comes next), and its whole length.
    payload_left: u32,
    chunk_len: u32,
    current: Header,
    previous: HashMap<u32, Header>,
    /// Payload bytes received of the message in progress (rml_rtmp keeps one).
    received: u32,
    /// The first payload bytes of a Set Chunk Size message.
    set_chunk_size: Vec<u8>,
}

impl ChunkLimit {
    pub fn new(max_message: u32) -> Self {
        ChunkLimit {
            max_message,
            chunk_size: INITIAL_CHUNK_SIZE,
            header: Vec::with_capacity(18),
            payload_left: 0,
            chunk_len: 0,
            current: Header::default(),
            previous: HashMap::new(),
            received: 0,
            set_chunk_size: Vec::new(),
        }
    }

    /// Follows `bytes` (the peer's bytes after the handshake, in order).
    pub fn feed(&mut self, mut bytes: &[u8]) -> Result<(), ChunkLimitError> {
        while !bytes.is_empty() {
            if self.payload_left > 0 {
                let n = (self.payload_left as usize).min(bytes.len());
                if self.current.type_id == SET_CHUNK_SIZE && self.set_chunk_size.len() < 4 {
                    let take = n.min(4 - self.set_chunk_size.len());
                    self.set_chunk_size.extend_from_slice(&bytes[..take]);
                }
                bytes = &bytes[n..];
                self.payload_left -= n as u32;
                if self.payload_left == 0 {
                    self.end_chunk();
                }
                continue;
            }
            self.header.push(bytes[0]);
            bytes = &bytes[1..];
            self.try_header()?;
        }
        Ok(())
    }

    /// Parses the header once all its bytes are in.
    fn try_header(&mut self) -> Result<(), ChunkLimitError> {
        let h = &self.header;
        let format = h[0] >> 6;
        let (csid, basic) = match h[0] & 0x3F {
            0 if h.len() >= 2 => (u32::from(h[1]) + 64, 2),
            1 if h.len() >= 3 => (u32::from(h[2]) * 256 + u32::from(h[1]) + 64, 3),
            0 | 1 => return Ok(()),
            id => (u32::from(id), 1),
        };
        let body = [11, 7, 3, 0][usize::from(format)];
        if h.len() < basic + body {
            return Ok(());
        }
        let mut header = if format == 0 {
            Header::default()
        } else {
            match self.previous.get(&csid) {
                Some(p) => *p,
                None => return Err(ChunkLimitError::NoPreviousHeader(csid)),
            }
        };
        let f = &h[basic..];
        let u24 = |b: &[u8]| (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        if format <= 2 {
            header.timestamp_field = u24(&f[0..3]);
        }
        if format <= 1 {
            header.length = u24(&f[3..6]);
            header.type_id = f[6];
        }
        let extended = usize::from(header.timestamp_field >= EXTENDED_TIMESTAMP) * 4;
        if h.len() < basic + body + extended {
            return Ok(());
        }
        if header.length > self.max_message {
            return Err(ChunkLimitError::MessageTooLarge {
                length: header.length,
                max: self.max_message,
            });
        }
        if !self.previous.contains_key(&csid) && self.previous.len() >= MAX_CHUNK_STREAMS {
            return Err(ChunkLimitError::TooManyChunkStreams);
        }
        self.header.clear();
        self.previous.insert(csid, header);
        self.current = header;
        // As rml_rtmp: a message longer than the chunk size comes in chunk-size pieces.
        let remaining = header.length.saturating_sub(self.received);
        self.chunk_len = if header.length > self.chunk_size {
            remaining.min(self.chunk_size)
        } else {
            header.length
        };
        self.payload_left = self.chunk_len;
        if self.payload_left == 0 {
            self.end_chunk();
        }
        Ok(())
    }

    fn end_chunk(&mut self) {
        self.received = self.received.saturating_add(self.chunk_len);
        if self.received == self.current.length {
            self.received = 0;
            if self.current.type_id == SET_CHUNK_SIZE && self.set_chunk_size.len() == 4 {
                let b = &self.set_chunk_size;
                let size = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
                if size <= 0x7FFF_FFFF {
                    self.chunk_size = size;
                }
            }
            self.set_chunk_size.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rml_rtmp::chunk_io::ChunkSerializer;
    use rml_rtmp::messages::{MessagePayload, RtmpMessage};
    use rml_rtmp::time::RtmpTimestamp;

    /// Serialized like a publisher does it: `rml_rtmp`'s own chunk serializer.
    fn wire(serializer: &mut ChunkSerializer, message: RtmpMessage, ts: u32) -> Vec<u8> {
        let payload =
            MessagePayload::from_rtmp_message(message, RtmpTimestamp::new(ts), 1).expect("payload");
        serializer
            .serialize(&payload, false, false)
            .expect("serialize")
            .bytes
    }

    #[test]
    fn follows_a_real_chunk_stream_through_chunk_size_changes_and_extended_timestamps() {
        let mut serializer = ChunkSerializer::new();
        let mut bytes = Vec::new();
        let big = bytes::Bytes::from(vec![7u8; 300_000]);
        for i in 0..20u32 {
            // Past 0xFFFFFF ms (extended timestamps) half way through.
            let ts = if i < 10 { i * 33 } else { 0x0100_0000 + i * 33 };
            bytes.extend(wire(
                &mut serializer,
                RtmpMessage::VideoData { data: big.clone() },
                ts,
            ));
            bytes.extend(wire(
                &mut serializer,
                RtmpMessage::AudioData {
                    data: bytes::Bytes::from_static(&[0xAF, 1, 2]),
                },
                ts,
            ));
            if i == 5 {
                let p = serializer
                    .set_max_chunk_size(4096, RtmpTimestamp::new(ts))
                    .expect("chunk size");
                bytes.extend(p.bytes);
            }
        }
        let mut limit = ChunkLimit::new(4 << 20);
        // In odd pieces, as reads split it.
        for piece in bytes.chunks(777) {
            limit.feed(piece).expect("a valid stream passes");
        }
        assert_eq!(limit.chunk_size, 4096);
        assert_eq!(limit.payload_left, 0);
        assert!(limit.header.is_empty());
    }

    #[test]
    fn a_message_over_the_cap_is_refused_at_its_header() {
        let mut serializer = ChunkSerializer::new();
        let huge = bytes::Bytes::from(vec![0u8; 5 << 20]);
        let bytes = wire(&mut serializer, RtmpMessage::VideoData { data: huge }, 0);
        let mut limit = ChunkLimit::new(4 << 20);
        // The first 12 bytes (the header) are enough to refuse it.
        assert_eq!(
            limit.feed(&bytes[..12]),
            Err(ChunkLimitError::MessageTooLarge {
                length: 5 << 20,
                max: 4 << 20
            })
        );
    }

    #[test]
    fn too_many_chunk_streams_are_refused() {
        let mut limit = ChunkLimit::new(4 << 20);
        let mut err = None;
        for csid in 0..200u32 {
            // Two-byte basic header (csid 64 + b), type 0, empty message.
            let header = [0x00, csid as u8, 0, 0, 0, 0, 0, 0, 9, 1, 0, 0, 0];
            if let Err(e) = limit.feed(&header) {
                err = Some(e);
                break;
            }
        }
        assert_eq!(err, Some(ChunkLimitError::TooManyChunkStreams));
    }

    proptest::proptest! {
        /// Arbitrary bytes never panic, and memory stays bounded.
        #[test]
        fn arbitrary_bytes(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..2000)) {
            let mut limit = ChunkLimit::new(4 << 20);
            let _ = limit.feed(&bytes);
            proptest::prop_assert!(limit.header.len() <= 18);
            proptest::prop_assert!(limit.previous.len() <= MAX_CHUNK_STREAMS);
        }
    }
}
