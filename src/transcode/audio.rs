//! The stream's audio, transcoded once for every rung: decode (any [`AudioCodec`] libav
//! decodes, any frame size), resample to the output rate and layout (libavfilter's `aresample`,
//! which also re-frames to the encoder's frame size), encode to AAC-LC. The encoder outlives
//! source changes, so the rungs' audio stays one continuous track.

use std::sync::Arc;

use bytes::Bytes;
use ff::codec::{self, Flags as CodecFlags};
use ff::format;
use ff::{filter, frame, ChannelLayout, Packet as AvPacket, Rational};
use ffmpeg_next as ff;

use super::libav::{audio_decoder, av, extradata, set_extradata, TranscodeError};
use super::pipeline::OUTPUT_OFFSET_SECS;
use crate::media::{AudioConfig, Packet, TrackKind};

struct Source {
    config: Arc<AudioConfig>,
    decoder: codec::decoder::Audio,
    /// Built at the first decoded frame, when its format is known.
    graph: Option<filter::Graph>,
}

struct Encoder {
    encoder: codec::encoder::Audio,
    rate: i32,
    config: Arc<AudioConfig>,
}

/// Decode → resample → AAC, once per stream.
pub struct AudioTranscoder {
    bitrate: u64,
    sample_rate: u32,
    source: Option<Source>,
    encoder: Option<Encoder>,
}

impl AudioTranscoder {
    pub fn new(bitrate: u64, sample_rate: u32) -> Self {
        AudioTranscoder {
            bitrate,
            sample_rate,
            source: None,
            encoder: None,
        }
    }

    /// The AAC configuration every rung carries, once the encoder is open.
    pub fn output_config(&self) -> Option<Arc<AudioConfig>> {
        self.encoder.as_ref().map(|e| e.config.clone())
    }

    /// (output sample rate, samples per encoded frame).
    pub fn output_timing(&self) -> (u32, u32) {
        self.encoder.as_ref().map_or((self.sample_rate, 1024), |e| {
            (e.rate as u32, e.encoder.frame_size().max(1))
        })
    }

    pub fn source_rate(&self) -> Option<u32> {
        self.source.as_ref().map(|s| s.config.sample_rate)
    }

    /// A (new) source configuration. Returns the output configuration when the encoder opened
    /// just now (the rungs announce it). Encoded packets left from the previous source go to `out`.
    pub fn configure(
        &mut self,
        config: Arc<AudioConfig>,
        out: &mut Vec<Packet>,
    ) -> Result<Option<Arc<AudioConfig>>, TranscodeError> {
        if self.source.as_ref().is_some_and(|s| s.config == config) {
            return Ok(None);
        }
        // The decoder and resampler follow the source; the encoder stays.
        self.drain(true, out)?;
        let mut ctx = codec::context::Context::new_with_codec(audio_decoder(config.codec)?);
        if !config.record.is_empty() {
            set_extradata(&mut ctx, &config.record)?;
        }
        let mut decoder = ctx.decoder();
        decoder.set_packet_time_base(Rational::new(1, config.sample_rate as i32));
        let decoder = decoder.audio().map_err(av("opening the audio decoder"))?;
        let opened = if self.encoder.is_none() {
            Some(self.open_encoder(config.channels)?)
        } else {
            None
        };
        self.source = Some(Source {
            config,
            decoder,
            graph: None,
        });
        Ok(opened)
    }

    fn open_encoder(&mut self, source_channels: u8) -> Result<Arc<AudioConfig>, TranscodeError> {
        let codec =
            ff::encoder::find(codec::Id::AAC).ok_or(TranscodeError::MissingCodec("AAC encoder"))?;
        let mut ctx = codec::context::Context::new_with_codec(codec);
        ctx.set_flags(CodecFlags::GLOBAL_HEADER);
        let mut enc = ctx
            .encoder()
            .audio()
            .map_err(av("creating the AAC encoder"))?;
        let layout = if source_channels >= 2 {
            ChannelLayout::STEREO
        } else {
            ChannelLayout::MONO
        };
        let rate = self.sample_rate as i32;
        enc.set_rate(rate);
        enc.set_channel_layout(layout);
        enc.set_channels(layout.channels());
        enc.set_format(format::Sample::F32(format::sample::Type::Planar));
        enc.set_bit_rate(self.bitrate as usize);
        enc.set_time_base(Rational::new(1, rate));
        let encoder = enc.open().map_err(av("opening the AAC encoder"))?;
        let asc = extradata(&encoder);
        let config = Arc::new(
            AudioConfig::aac(&asc).map_err(|e| TranscodeError::Parameters(e.to_string()))?,
        );
        self.encoder = Some(Encoder {
            encoder,
            rate,
            config: config.clone(),
        });
        Ok(config)
    }

    /// Decodes one source packet; encoded output goes to `out`.
    pub fn decode(&mut self, p: &Packet, out: &mut Vec<Packet>) -> Result<(), TranscodeError> {
        let Some(source) = self.source.as_mut() else {
            return Ok(());
        };
        let mut packet = AvPacket::copy(&p.data);
        packet.set_pts(Some(p.pts));
        packet.set_dts(Some(p.dts));
        if let Err(e) = source.decoder.send_packet(&packet) {
            // A corrupt frame costs that frame, not the stream.
            tracing::debug!(error = %e, "audio decoder rejected a packet");
        }
        self.drain(false, out)
    }

    /// Flushes decoder, resampler and encoder at the end of the stream.
    pub fn flush(&mut self, out: &mut Vec<Packet>) -> Result<(), TranscodeError> {
        self.drain(true, out)?;
        if let Some(enc) = self.encoder.as_mut() {
            let _ = enc.encoder.send_eof();
            drain_encoder(enc, out);
        }
        Ok(())
    }

    fn build_graph(&self, decoded: &frame::Audio) -> Result<filter::Graph, TranscodeError> {
        let Some(enc) = &self.encoder else {
            return Err(TranscodeError::Parameters("no audio encoder".into()));
        };
        let mut graph = filter::Graph::new();
        let layout = if decoded.channel_layout().bits() == 0 {
            ChannelLayout::default(i32::from(decoded.channels()))
        } else {
            decoded.channel_layout()
        };
        let in_rate = decoded.rate();
        let args = format!(
            "time_base=1/{in_rate}:sample_rate={in_rate}:sample_fmt={}:channel_layout=0x{:x}",
            decoded.format().name(),
            layout.bits()
        );
        let abuffer =
            filter::find("abuffer").ok_or(TranscodeError::MissingCodec("abuffer filter"))?;
        let abuffersink = filter::find("abuffersink")
            .ok_or(TranscodeError::MissingCodec("abuffersink filter"))?;
        graph
            .add(&abuffer, "in", &args)
            .map_err(av("audio filter input"))?;
        graph
            .add(&abuffersink, "out", "")
            .map_err(av("audio filter output"))?;
        if let Some(mut out) = graph.get("out") {
            out.set_sample_format(enc.encoder.format());
            out.set_channel_layout(enc.encoder.channel_layout());
            out.set_sample_rate(enc.rate as u32);
        }
        graph
            .output("in", 0)
            .and_then(|p| p.input("out", 0))
            // async=1: silence where the source's timestamps leave a gap (WebRTC audio has no
            // sample counter, only RTP times, and loses packets), trimmed where they overlap.
            .and_then(|p| p.parse(&format!("aresample={}:async=1", enc.rate)))
            .map_err(av("audio filter graph"))?;
        graph.validate().map_err(av("audio filter graph"))?;
        if let Some(mut out) = graph.get("out") {
            out.sink().set_frame_size(enc.encoder.frame_size());
        }
        Ok(graph)
    }

    fn drain(&mut self, eof: bool, out: &mut Vec<Packet>) -> Result<(), TranscodeError> {
        if eof {
            if let Some(source) = self.source.as_mut() {
                let _ = source.decoder.send_eof();
            }
        }
        let mut decoded = frame::Audio::empty();
        loop {
            let Some(source) = self.source.as_mut() else {
                return Ok(());
            };
            if source.decoder.receive_frame(&mut decoded).is_err() {
                break;
            }
            let ts = decoded.timestamp().or(decoded.pts());
            decoded.set_pts(ts);
            if self.source.as_ref().is_some_and(|s| s.graph.is_none()) {
                let graph = self.build_graph(&decoded)?;
                if let Some(source) = self.source.as_mut() {
                    source.graph = Some(graph);
                }
            }
            if let Some(graph) = self.source.as_mut().and_then(|s| s.graph.as_mut()) {
                if let Some(mut input) = graph.get("in") {
                    input
                        .source()
                        .add(&decoded)
                        .map_err(av("audio filter input"))?;
                }
            }
            self.drain_graph(out)?;
        }
        if eof {
            if let Some(graph) = self.source.as_mut().and_then(|s| s.graph.as_mut()) {
                if let Some(mut input) = graph.get("in") {
                    let _ = input.source().flush();
                }
            }
            self.drain_graph(out)?;
        }
        Ok(())
    }

    fn drain_graph(&mut self, out: &mut Vec<Packet>) -> Result<(), TranscodeError> {
        let mut filtered = frame::Audio::empty();
        while let Some(mut sink) = self
            .source
            .as_mut()
            .and_then(|s| s.graph.as_mut())
            .and_then(|g| g.get("out"))
        {
            if sink.sink().frame(&mut filtered).is_err() {
                break;
            }
            let sink_tb = sink.sink().time_base();
            if let Some(enc) = self.encoder.as_mut() {
                // The encoder counts in samples (1/rate); rescale if the graph chose otherwise.
                let encoder_tb = Rational::new(1, enc.rate);
                if sink_tb != encoder_tb && sink_tb.denominator() != 0 {
                    let pts = filtered
                        .pts()
                        .map(|t| ff::Rescale::rescale(&t, sink_tb, encoder_tb));
                    filtered.set_pts(pts);
                }
                enc.encoder
                    .send_frame(&filtered)
                    .map_err(av("encoding audio"))?;
                drain_encoder(enc, out);
            }
        }
        Ok(())
    }
}

fn drain_encoder(enc: &mut Encoder, out: &mut Vec<Packet>) {
    let mut packet = AvPacket::empty();
    while enc.encoder.receive_packet(&mut packet).is_ok() {
        let (Some(pts), Some(data)) = (packet.pts(), packet.data()) else {
            continue;
        };
        let ts = pts + OUTPUT_OFFSET_SECS * i64::from(enc.rate);
        out.push(Packet {
            track: TrackKind::Audio,
            dts: ts,
            pts: ts,
            keyframe: true,
            data: Bytes::copy_from_slice(data),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ff::format::sample::{Sample, Type};
    use ff::Dictionary;

    /// One second of a 440 Hz tone as Opus packets of `frame_ms` (libopus through libav).
    fn opus_packets(frame_ms: &str) -> Vec<Packet> {
        super::super::libav::init_libav();
        let codec = ff::encoder::find_by_name("libopus").expect("libopus in Debian's FFmpeg");
        let ctx = codec::context::Context::new_with_codec(codec);
        let mut enc = ctx.encoder().audio().expect("audio encoder");
        enc.set_rate(48_000);
        enc.set_channel_layout(ChannelLayout::MONO);
        enc.set_channels(1);
        enc.set_format(Sample::I16(Type::Packed));
        enc.set_bit_rate(64_000);
        enc.set_time_base(Rational::new(1, 48_000));
        let mut options = Dictionary::new();
        options.set("frame_duration", frame_ms);
        let mut enc = enc.open_with(options).expect("open libopus");
        let n = enc.frame_size() as usize;
        let mut packets = Vec::new();
        let drain = |enc: &mut codec::encoder::Audio, packets: &mut Vec<Packet>| {
            let mut p = AvPacket::empty();
            while enc.receive_packet(&mut p).is_ok() {
                if let (Some(pts), Some(data)) = (p.pts(), p.data()) {
                    packets.push(Packet {
                        track: TrackKind::Audio,
                        dts: pts,
                        pts,
                        keyframe: true,
                        data: Bytes::copy_from_slice(data),
                    });
                }
            }
        };
        let mut t = 0usize;
        while t < 48_000 {
            let mut frame = frame::Audio::new(Sample::I16(Type::Packed), n, ChannelLayout::MONO);
            frame.set_rate(48_000);
            frame.set_pts(Some(t as i64));
            for (i, sample) in frame.data_mut(0).chunks_exact_mut(2).enumerate() {
                let phase = (t + i) as f64 * 440.0 * std::f64::consts::TAU / 48_000.0;
                sample.copy_from_slice(&((phase.sin() * 8000.0) as i16).to_le_bytes());
            }
            enc.send_frame(&frame).expect("encode");
            drain(&mut enc, &mut packets);
            t += n;
        }
        let _ = enc.send_eof();
        drain(&mut enc, &mut packets);
        packets
    }

    /// Opus at 10 ms and 40 ms frames comes out as one continuous AAC track of 1024-sample
    /// frames covering the second that went in.
    #[test]
    fn any_opus_frame_size_becomes_continuous_aac() {
        for frame_ms in ["10", "40"] {
            let input = opus_packets(frame_ms);
            assert!(input.len() >= 20, "{frame_ms} ms: {} packets", input.len());
            let mut audio = AudioTranscoder::new(96_000, 48_000);
            let mut out = Vec::new();
            let config = Arc::new(AudioConfig::opus_from_channels(1).expect("OpusHead"));
            let opened = audio
                .configure(config.clone(), &mut out)
                .expect("configure");
            assert_eq!(
                opened.as_ref().map(|c| c.codec_string()),
                Some("mp4a.40.2".into())
            );
            // The same configuration again changes nothing.
            assert!(audio.configure(config, &mut out).expect("again").is_none());
            for p in &input {
                audio.decode(p, &mut out).expect("decode");
            }
            audio.flush(&mut out).expect("flush");
            assert_eq!(audio.output_timing(), (48_000, 1024));
            let steps: Vec<i64> = out.windows(2).map(|w| w[1].pts - w[0].pts).collect();
            assert!(
                steps.iter().all(|&s| s == 1024),
                "{frame_ms} ms: steps {steps:?}"
            );
            let covered = out.len() as f64 * 1024.0 / 48_000.0;
            assert!(
                (0.9..=1.2).contains(&covered),
                "{frame_ms} ms: {covered} s of AAC"
            );
            assert!(out
                .iter()
                .all(|p| !p.data.is_empty() && p.track == TrackKind::Audio));
        }
    }

    /// A gap in the source (packets lost, or dropped by a ladder behind real time) stays a gap
    /// of the same length in the output: audio after it keeps its place beside the video.
    #[test]
    fn a_gap_in_the_source_keeps_the_audio_on_its_timestamps() {
        for gap_secs in [3i64, 61] {
            let mut input = opus_packets("20");
            let gap = gap_secs * 48_000;
            let half = input.len() / 2;
            for p in &mut input[half..] {
                p.pts += gap;
                p.dts += gap;
            }
            let mut audio = AudioTranscoder::new(96_000, 48_000);
            let mut out = Vec::new();
            let config = Arc::new(AudioConfig::opus_from_channels(1).expect("OpusHead"));
            audio.configure(config, &mut out).expect("configure");
            for p in &input {
                audio.decode(p, &mut out).expect("decode");
            }
            audio.flush(&mut out).expect("flush");
            let offset = OUTPUT_OFFSET_SECS * 48_000;
            let last_in = input.last().map(|p| p.pts).unwrap_or(0);
            let last_out = out.last().map(|p| p.pts - offset).unwrap_or(0);
            let lag_ms = (last_in - last_out) * 1000 / 48_000;
            assert!(
                lag_ms.abs() < 100,
                "gap {gap_secs} s: audio off by {lag_ms} ms"
            );
        }
    }
}
