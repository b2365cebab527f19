//! CMAF / fragmented-MP4 writer (ISO/IEC 14496-12, 23000-19): an init segment (`ftyp`+`moov`)
//! and media fragments (`moof`+`mdat`).
//!
//! Written by hand because it is small and livegate needs exact control of each fragment:
//! one `traf` per track with a `tfdt`, signed composition offsets (`trun` v1) for B-frames, and
//! sync-sample flags that let a player start at any segment. The general MP4 crates either write
//! whole files with a sample table (mp4) or model every box field generically, which costs
//! more code here than the boxes themselves. ffprobe and hls.js check the output in the tests.

use bytes::Bytes;

use crate::media::{AudioConfig, VideoConfig, VIDEO_TIMESCALE};

pub const VIDEO_TRACK_ID: u32 = 1;
pub const AUDIO_TRACK_ID: u32 = 2;

/// One coded sample in a fragment.
#[derive(Debug, Clone)]
pub struct Sample {
    pub duration: u32,
    /// pts − dts, in the track's timescale.
    pub composition_offset: i32,
    pub keyframe: bool,
    pub data: Bytes,
}

/// A track's part of one fragment.
#[derive(Debug, Clone)]
pub struct TrackRun<'a> {
    pub track_id: u32,
    pub base_decode_time: u64,
    pub samples: &'a [Sample],
}

/// Appends boxes to a buffer, patching each box's size when it is closed.
struct BoxWriter {
    buf: Vec<u8>,
    open: Vec<usize>,
}

impl BoxWriter {
    fn new() -> Self {
        BoxWriter {
            buf: Vec::with_capacity(4096),
            open: Vec::new(),
        }
    }
    fn begin(&mut self, kind: &[u8; 4]) {
        self.open.push(self.buf.len());
        self.buf.extend_from_slice(&[0, 0, 0, 0]);
        self.buf.extend_from_slice(kind);
    }
    fn begin_full(&mut self, kind: &[u8; 4], version: u8, flags: u32) {
        self.begin(kind);
        self.u32((u32::from(version) << 24) | (flags & 0x00ff_ffff));
    }
    fn end(&mut self) {
        if let Some(start) = self.open.pop() {
            let size = (self.buf.len() - start) as u32;
            self.buf[start..start + 4].copy_from_slice(&size.to_be_bytes());
        }
    }
    fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }
    fn u16(&mut self, v: u16) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }
    fn i32(&mut self, v: i32) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }
    fn bytes(&mut self, v: &[u8]) {
        self.buf.extend_from_slice(v);
    }
    fn zeros(&mut self, n: usize) {
        self.buf.resize(self.buf.len() + n, 0);
    }
    fn matrix(&mut self) {
        for v in [0x0001_0000u32, 0, 0, 0, 0x0001_0000, 0, 0, 0, 0x4000_0000] {
            self.u32(v);
        }
    }
}

/// Builds the init segment for the tracks present.
pub fn init_segment(video: Option<&VideoConfig>, audio: Option<&AudioConfig>) -> Bytes {
    let mut w = BoxWriter::new();
    w.begin(b"ftyp");
    w.bytes(b"iso6");
    w.u32(0);
    for brand in [b"iso6", b"cmfc", b"mp41", b"iso5"] {
        w.bytes(brand);
    }
    w.end();

    w.begin(b"moov");
    w.begin_full(b"mvhd", 0, 0);
    w.u32(0); // creation
    w.u32(0); // modification
    w.u32(1000); // timescale
    w.u32(0); // duration: unknown (fragmented)
    w.u32(0x0001_0000); // rate 1.0
    w.u16(0x0100); // volume 1.0
    w.zeros(10);
    w.matrix();
    w.zeros(24);
    w.u32(AUDIO_TRACK_ID + 1); // next track id
    w.end();

    if let Some(v) = video {
        video_trak(&mut w, v);
    }
    if let Some(a) = audio {
        audio_trak(&mut w, a);
    }

    w.begin(b"mvex");
    for (present, id) in [
        (video.is_some(), VIDEO_TRACK_ID),
        (audio.is_some(), AUDIO_TRACK_ID),
    ] {
        if present {
            w.begin_full(b"trex", 0, 0);
            w.u32(id);
            w.u32(1); // sample description index
            w.u32(0);
            w.u32(0);
            w.u32(0);
            w.end();
        }
    }
    w.end(); // mvex
    w.end(); // moov
    Bytes::from(w.buf)
}

fn tkhd(w: &mut BoxWriter, track_id: u32, audio: bool, width: u32, height: u32) {
    w.begin_full(b"tkhd", 0, 0x3); // enabled, in movie
    w.u32(0);
    w.u32(0);
    w.u32(track_id);
    w.u32(0);
    w.u32(0); // duration
    w.zeros(8);
    w.u16(0); // layer
    w.u16(0); // alternate group
    w.u16(if audio { 0x0100 } else { 0 });
    w.u16(0);
    w.matrix();
    w.u32(width << 16);
    w.u32(height << 16);
    w.end();
}

fn mdhd_hdlr(w: &mut BoxWriter, timescale: u32, handler: &[u8; 4], name: &[u8]) {
    w.begin_full(b"mdhd", 0, 0);
    w.u32(0);
    w.u32(0);
    w.u32(timescale);
    w.u32(0);
    w.u16(0x55c4); // language "und"
    w.u16(0);
    w.end();
    w.begin_full(b"hdlr", 0, 0);
    w.u32(0);
    w.bytes(handler);
    w.zeros(12);
    w.bytes(name);
    w.u8(0);
    w.end();
}

fn dinf(w: &mut BoxWriter) {
    w.begin(b"dinf");
    w.begin_full(b"dref", 0, 0);
    w.u32(1);
    w.begin_full(b"url ", 0, 1); // media in the same file
    w.end();
    w.end();
    w.end();
}

fn empty_sample_tables(w: &mut BoxWriter) {
    for kind in [b"stts", b"stsc", b"stco"] {
        w.begin_full(kind, 0, 0);
        w.u32(0);
        w.end();
    }
    w.begin_full(b"stsz", 0, 0);
    w.u32(0);
    w.u32(0);
    w.end();
}

fn video_trak(w: &mut BoxWriter, v: &VideoConfig) {
    w.begin(b"trak");
    tkhd(w, VIDEO_TRACK_ID, false, v.width, v.height);
    w.begin(b"mdia");
    mdhd_hdlr(w, VIDEO_TIMESCALE, b"vide", b"livegate video");
    w.begin(b"minf");
    w.begin_full(b"vmhd", 0, 1);
    w.zeros(8);
    w.end();
    dinf(w);
    w.begin(b"stbl");
    w.begin_full(b"stsd", 0, 0);
    w.u32(1);
    w.begin(b"avc1");
    w.zeros(6);
    w.u16(1); // data reference index
    w.zeros(16);
    w.u16(v.width as u16);
    w.u16(v.height as u16);
    w.u32(0x0048_0000); // 72 dpi
    w.u32(0x0048_0000);
    w.u32(0);
    w.u16(1); // frame count
    w.zeros(32); // compressor name
    w.u16(0x0018); // depth
    w.u16(0xffff); // pre-defined −1
    w.begin(b"avcC");
    w.bytes(&v.record);
    w.end();
    w.end(); // avc1
    w.end(); // stsd
    empty_sample_tables(w);
    w.end(); // stbl
    w.end(); // minf
    w.end(); // mdia
    w.end(); // trak
}

/// MPEG-4 descriptor header with the one-byte size form when it fits.
fn descriptor(w: &mut BoxWriter, tag: u8, len: usize) {
    w.u8(tag);
    if len < 0x80 {
        w.u8(len as u8);
    } else {
        w.u8(0x80 | ((len >> 21) & 0x7f) as u8);
        w.u8(0x80 | ((len >> 14) & 0x7f) as u8);
        w.u8(0x80 | ((len >> 7) & 0x7f) as u8);
        w.u8((len & 0x7f) as u8);
    }
}

fn descriptor_header_len(len: usize) -> usize {
    if len < 0x80 {
        2
    } else {
        5
    }
}

fn audio_trak(w: &mut BoxWriter, a: &AudioConfig) {
    w.begin(b"trak");
    tkhd(w, AUDIO_TRACK_ID, true, 0, 0);
    w.begin(b"mdia");
    mdhd_hdlr(w, a.sample_rate, b"soun", b"livegate audio");
    w.begin(b"minf");
    w.begin_full(b"smhd", 0, 0);
    w.u32(0);
    w.end();
    dinf(w);
    w.begin(b"stbl");
    w.begin_full(b"stsd", 0, 0);
    w.u32(1);
    w.begin(b"mp4a");
    w.zeros(6);
    w.u16(1);
    w.zeros(8);
    w.u16(u16::from(a.channels));
    w.u16(16);
    w.u32(0);
    // 16.16 fixed point; rates above 65535 Hz do not fit and are taken from the esds.
    w.u32(if a.sample_rate <= 0xffff {
        a.sample_rate << 16
    } else {
        0
    });
    w.begin_full(b"esds", 0, 0);
    let dsi = a.record.len();
    let dcd = 13 + descriptor_header_len(dsi) + dsi;
    let es = 3 + descriptor_header_len(dcd) + dcd + 3;
    descriptor(w, 0x03, es);
    w.u16(0); // ES id
    w.u8(0);
    descriptor(w, 0x04, dcd);
    w.u8(0x40); // MPEG-4 audio
    w.u8(0x15); // audio stream
    w.zeros(3); // buffer size
    w.u32(0); // max bitrate
    w.u32(0); // avg bitrate
    descriptor(w, 0x05, dsi);
    w.bytes(&a.record);
    descriptor(w, 0x06, 1);
    w.u8(0x02);
    w.end(); // esds
    w.end(); // mp4a
    w.end(); // stsd
    empty_sample_tables(w);
    w.end(); // stbl
    w.end(); // minf
    w.end(); // mdia
    w.end(); // trak
}

const SAMPLE_FLAGS_SYNC: u32 = 0x0200_0000; // depends on no other sample
const SAMPLE_FLAGS_NON_SYNC: u32 = 0x0101_0000; // depends on others, not a sync sample

/// Builds one `moof`+`mdat` fragment. Track runs with no samples are left out.
pub fn media_fragment(sequence: u32, runs: &[TrackRun<'_>]) -> Bytes {
    let runs: Vec<&TrackRun<'_>> = runs.iter().filter(|r| !r.samples.is_empty()).collect();
    let mut w = BoxWriter::new();
    w.begin(b"moof");
    w.begin_full(b"mfhd", 0, 0);
    w.u32(sequence);
    w.end();
    let mut data_offset_positions = Vec::with_capacity(runs.len());
    for run in &runs {
        w.begin(b"traf");
        w.begin_full(b"tfhd", 0, 0x02_0000); // default-base-is-moof
        w.u32(run.track_id);
        w.end();
        w.begin_full(b"tfdt", 1, 0);
        w.u64(run.base_decode_time);
        w.end();
        // data offset, per-sample duration, size, flags, composition offset
        w.begin_full(
            b"trun",
            1,
            0x000001 | 0x000100 | 0x000200 | 0x000400 | 0x000800,
        );
        w.u32(run.samples.len() as u32);
        data_offset_positions.push(w.buf.len());
        w.i32(0);
        for s in run.samples {
            w.u32(s.duration);
            w.u32(s.data.len() as u32);
            w.u32(if s.keyframe {
                SAMPLE_FLAGS_SYNC
            } else {
                SAMPLE_FLAGS_NON_SYNC
            });
            w.i32(s.composition_offset);
        }
        w.end(); // trun
        w.end(); // traf
    }
    w.end(); // moof
    let moof_size = w.buf.len();
    let mdat_payload: usize = runs
        .iter()
        .flat_map(|r| r.samples.iter())
        .map(|s| s.data.len())
        .sum();
    let mut offset = moof_size + 8;
    for (run, pos) in runs.iter().zip(data_offset_positions) {
        w.buf[pos..pos + 4].copy_from_slice(&(offset as i32).to_be_bytes());
        offset += run.samples.iter().map(|s| s.data.len()).sum::<usize>();
    }
    w.buf.reserve(8 + mdat_payload);
    w.u32((8 + mdat_payload) as u32);
    w.bytes(b"mdat");
    for run in &runs {
        for s in run.samples {
            w.bytes(&s.data);
        }
    }
    Bytes::from(w.buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::avc::tests::AVCC_640X360_HIGH;

    /// Walks top-level boxes, returning (type, size).
    fn boxes(data: &[u8]) -> Vec<(String, usize)> {
        let mut out = Vec::new();
        let mut pos = 0;
        while pos + 8 <= data.len() {
            let size = u32::from_be_bytes(data[pos..pos + 4].try_into().unwrap()) as usize;
            out.push((
                String::from_utf8_lossy(&data[pos + 4..pos + 8]).into(),
                size,
            ));
            assert!(size >= 8 && pos + size <= data.len(), "box overruns");
            pos += size;
        }
        assert_eq!(pos, data.len());
        out
    }

    #[test]
    fn init_segment_layout() {
        let v = VideoConfig::h264(AVCC_640X360_HIGH).unwrap();
        let a = AudioConfig::aac(&[0x11, 0x90]).unwrap();
        let init = init_segment(Some(&v), Some(&a));
        let top: Vec<String> = boxes(&init).into_iter().map(|b| b.0).collect();
        assert_eq!(top, vec!["ftyp", "moov"]);
        let find = |needle: &[u8]| init.windows(4).any(|w| w == needle);
        for b in [
            &b"avcC"[..],
            b"esds",
            b"trex",
            b"mvex",
            b"smhd",
            b"vmhd",
            b"mp4a",
            b"avc1",
        ] {
            assert!(find(b), "missing {}", String::from_utf8_lossy(b));
        }
        // Audio-only init has no video track.
        let audio_only = init_segment(None, Some(&a));
        assert!(!audio_only.windows(4).any(|w| w == b"avc1"));
    }

    #[test]
    fn fragment_offsets_point_into_mdat() {
        let video = vec![
            Sample {
                duration: 3000,
                composition_offset: 6000,
                keyframe: true,
                data: Bytes::from_static(b"VVVV"),
            },
            Sample {
                duration: 3000,
                composition_offset: -3000,
                keyframe: false,
                data: Bytes::from_static(b"vv"),
            },
        ];
        let audio = vec![Sample {
            duration: 1024,
            composition_offset: 0,
            keyframe: true,
            data: Bytes::from_static(b"AAA"),
        }];
        let frag = media_fragment(
            7,
            &[
                TrackRun {
                    track_id: VIDEO_TRACK_ID,
                    base_decode_time: 90000,
                    samples: &video,
                },
                TrackRun {
                    track_id: AUDIO_TRACK_ID,
                    base_decode_time: 48000,
                    samples: &audio,
                },
            ],
        );
        let top = boxes(&frag);
        assert_eq!(top[0].0, "moof");
        assert_eq!(top[1].0, "mdat");
        let moof_size = top[0].1;
        assert_eq!(&frag[moof_size + 8..], b"VVVVvvAAA");
        // Find both trun data offsets.
        let offsets: Vec<usize> = frag
            .windows(4)
            .enumerate()
            .filter(|(_, w)| *w == b"trun")
            .map(|(i, _)| i32::from_be_bytes(frag[i + 12..i + 16].try_into().unwrap()) as usize)
            .collect();
        assert_eq!(&frag[offsets[0]..offsets[0] + 4], b"VVVV");
        assert_eq!(&frag[offsets[1]..offsets[1] + 3], b"AAA");
    }
}
