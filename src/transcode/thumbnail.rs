//! Thumbnails: a JPEG of the live picture every `transcode.thumbnail_interval_secs`, kept on the
//! stream (`LiveStream::thumbnail`) for `/live/<user>/thumb.jpg` and the directory page.
//!
//! A ladder takes it from a picture it already decoded (one scale and one JPEG encode per
//! interval, no extra decode). A stream served as published has no decoder: [`spawn`] decodes
//! one keyframe per interval on a thread of its own, dropping keyframes while it is busy.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ff::codec;
use ff::format::Pixel;
use ff::frame;
use ff::software::scaling;
use ff::{Packet as AvPacket, Rational};
use ffmpeg_next as ff;

use super::libav::{
    av, set_extradata, set_frame_quality, set_max_pixels, video_decoder, TranscodeError,
};
use crate::media::{MediaEvent, TrackKind, VideoConfig, VIDEO_TIMESCALE};
use crate::stream::{LiveStream, Subscription, Thumbnail};

/// Thumbnails fit in this box (the 360p rung's size), never upscaled.
pub const MAX_SIZE: (u32, u32) = (640, 360);
/// JPEG quality scale (2 best … 31 worst).
const QSCALE: i32 = 5;
/// Largest source picture the passthrough thumbnailer decodes (8K).
const MAX_PIXELS: u64 = 7680 * 4320;

/// The thumbnail size for a `width`×`height` picture: within [`MAX_SIZE`], aspect kept, even.
pub fn size_for(width: u32, height: u32) -> (u32, u32) {
    if width == 0 || height == 0 {
        return (2, 2);
    }
    let scale = (f64::from(MAX_SIZE.0) / f64::from(width))
        .min(f64::from(MAX_SIZE.1) / f64::from(height))
        .min(1.0);
    let even = |v: f64| ((v.round() as u32) & !1).max(2);
    (
        even(f64::from(width) * scale),
        even(f64::from(height) * scale),
    )
}

/// When the next thumbnail is due, on the media clock (ticks of `VIDEO_TIMESCALE`).
#[derive(Debug)]
pub struct Schedule {
    interval: i64,
    last: Option<i64>,
}

impl Schedule {
    /// `interval_secs` 0: never.
    pub fn new(interval_secs: u64) -> Self {
        Schedule {
            interval: i64::try_from(interval_secs)
                .unwrap_or(i64::MAX / i64::from(VIDEO_TIMESCALE))
                .saturating_mul(i64::from(VIDEO_TIMESCALE)),
            last: None,
        }
    }

    /// Whether a keyframe at `pts` makes the next thumbnail (and if so, it is taken).
    pub fn due(&mut self, pts: i64) -> bool {
        if self.interval == 0 {
            return false;
        }
        // A timestamp jump back (a new source) restarts the schedule.
        let due = self
            .last
            .is_none_or(|last| pts < last || pts - last >= self.interval);
        if due {
            self.last = Some(pts);
        }
        due
    }
}

/// Scales a decoded picture and encodes it as a JPEG.
#[derive(Default)]
pub struct JpegMaker {
    scaler: Option<(scaling::Context, (Pixel, u32, u32))>,
}

impl JpegMaker {
    pub fn encode(&mut self, picture: &frame::Video) -> Result<Thumbnail, TranscodeError> {
        let (width, height) = size_for(picture.width(), picture.height());
        let src = (picture.format(), picture.width(), picture.height());
        if self.scaler.as_ref().map(|s| s.1) != Some(src) {
            let ctx = scaling::Context::get(
                src.0,
                src.1,
                src.2,
                // Full-range 4:2:0, what FFmpeg's JPEG encoder takes.
                Pixel::YUVJ420P,
                width,
                height,
                scaling::Flags::BILINEAR,
            )
            .map_err(av("creating the thumbnail scaler"))?;
            self.scaler = Some((ctx, src));
        }
        let mut scaled = frame::Video::new(Pixel::YUVJ420P, width, height);
        if let Some((ctx, _)) = self.scaler.as_mut() {
            ctx.run(picture, &mut scaled)
                .map_err(av("scaling the thumbnail"))?;
        }
        let mjpeg = ff::encoder::find(codec::Id::MJPEG)
            .ok_or(TranscodeError::MissingCodec("the MJPEG encoder"))?;
        let mut encoder = codec::context::Context::new_with_codec(mjpeg)
            .encoder()
            .video()
            .map_err(av("creating the JPEG encoder"))?;
        encoder.set_width(width);
        encoder.set_height(height);
        encoder.set_format(Pixel::YUVJ420P);
        encoder.set_time_base(Rational::new(1, 25));
        encoder.set_flags(codec::Flags::QSCALE);
        encoder.set_global_quality(QSCALE * ff::ffi::FF_QP2LAMBDA);
        let mut encoder = encoder
            .open_as(mjpeg)
            .map_err(av("opening the JPEG encoder"))?;
        scaled.set_pts(Some(0));
        set_frame_quality(&mut scaled, QSCALE * ff::ffi::FF_QP2LAMBDA);
        encoder
            .send_frame(&scaled)
            .map_err(av("encoding the thumbnail"))?;
        encoder.send_eof().map_err(av("encoding the thumbnail"))?;
        let mut packet = AvPacket::empty();
        encoder
            .receive_packet(&mut packet)
            .map_err(av("encoding the thumbnail"))?;
        Ok(Thumbnail {
            jpeg: Bytes::copy_from_slice(packet.data().unwrap_or_default()),
            width,
            height,
            taken_at: chrono::Utc::now(),
        })
    }
}

/// A poster for a recording: its first picture (from an init segment and the first media
/// segment, fMP4), as a thumbnail. Blocking (libav demuxes a temporary file).
pub fn poster(init: &[u8], segment: &[u8]) -> Result<Thumbnail, TranscodeError> {
    let path = std::env::temp_dir().join(format!(
        "livegate-poster-{}.mp4",
        hex::encode(rand::random::<[u8; 8]>())
    ));
    let io = |source: std::io::Error| TranscodeError::Av {
        what: "writing the recording's first segment for the poster",
        source: ff::Error::Other {
            errno: source.raw_os_error().unwrap_or(ff::util::error::EIO),
        },
    };
    let mut bytes = Vec::with_capacity(init.len() + segment.len());
    bytes.extend_from_slice(init);
    bytes.extend_from_slice(segment);
    std::fs::write(&path, bytes).map_err(io)?;
    let result = first_picture(&path).and_then(|p| JpegMaker::default().encode(&p));
    let _ = std::fs::remove_file(&path);
    result
}

fn first_picture(path: &std::path::Path) -> Result<frame::Video, TranscodeError> {
    let mut input = ff::format::input(path).map_err(av("opening the recording"))?;
    let stream =
        input
            .streams()
            .best(ff::media::Type::Video)
            .ok_or(TranscodeError::MissingCodec(
                "a video track in the recording",
            ))?;
    let index = stream.index();
    let context = codec::context::Context::from_parameters(stream.parameters())
        .map_err(av("reading the recording's video parameters"))?;
    let mut decoder = context
        .decoder()
        .video()
        .map_err(av("opening the video decoder"))?;
    let mut picture = frame::Video::empty();
    for (stream, packet) in input.packets() {
        if stream.index() != index {
            continue;
        }
        if decoder.send_packet(&packet).is_ok() && decoder.receive_frame(&mut picture).is_ok() {
            return Ok(picture);
        }
    }
    decoder.send_eof().map_err(av("decoding the recording"))?;
    decoder
        .receive_frame(&mut picture)
        .map_err(av("decoding the recording"))?;
    Ok(picture)
}

/// Decodes single keyframes of one video configuration.
struct KeyframeDecoder {
    config: Arc<VideoConfig>,
    decoder: ff::decoder::Video,
}

impl KeyframeDecoder {
    fn open(config: Arc<VideoConfig>) -> Result<Self, TranscodeError> {
        let mut ctx = codec::context::Context::new_with_codec(video_decoder(config.codec)?);
        if !config.record.is_empty() {
            set_extradata(&mut ctx, &config.record)?;
        }
        set_max_pixels(&mut ctx, MAX_PIXELS);
        let mut decoder = ctx.decoder();
        decoder.set_packet_time_base(Rational::new(1, VIDEO_TIMESCALE as i32));
        let decoder = decoder.video().map_err(av("opening the video decoder"))?;
        Ok(KeyframeDecoder { config, decoder })
    }

    /// The picture of one keyframe (the decoder is drained and reset after it).
    fn decode(&mut self, packet: &crate::media::Packet) -> Result<frame::Video, TranscodeError> {
        let mut av_packet = AvPacket::copy(&packet.data);
        av_packet.set_pts(Some(packet.pts));
        av_packet.set_dts(Some(packet.dts));
        av_packet.set_flags(codec::packet::Flags::KEY);
        let decoded = self
            .decoder
            .send_packet(&av_packet)
            .and_then(|()| self.decoder.send_eof())
            .and_then(|()| {
                let mut picture = frame::Video::empty();
                self.decoder.receive_frame(&mut picture).map(|()| picture)
            });
        self.decoder.flush();
        decoded.map_err(av("decoding a keyframe for the thumbnail"))
    }
}

/// Keyframes handed to the thumbnail thread at most: it takes the next one when it is free.
const QUEUE: usize = 1;

/// Thumbnails of a stream served as published: follows `subscription` and decodes a keyframe
/// every `interval_secs` on its own thread, until the stream ends.
pub fn spawn(mut subscription: Subscription, interval_secs: u64) {
    if interval_secs == 0 {
        return;
    }
    let stream = subscription.stream().clone();
    let (tx, rx) = std::sync::mpsc::sync_channel::<(Arc<VideoConfig>, crate::media::Packet)>(QUEUE);
    let thread_stream = stream.clone();
    let span = tracing::info_span!(parent: None, "thumbnail", stream = %stream.name, session = stream.session_id);
    let thread_span = span.clone();
    let spawned = std::thread::Builder::new()
        .name(format!("lg-thumb-{}", stream.session_id))
        .spawn(move || {
            let _entered = thread_span.enter();
            run(&rx, &thread_stream);
        });
    if let Err(e) = spawned {
        tracing::warn!(parent: &span, error = %e, "cannot start the thumbnail thread; no thumbnails");
        return;
    }
    tokio::spawn(async move {
        let mut schedule = Schedule::new(interval_secs);
        let mut config = None;
        while let Some(event) = subscription.recv().await {
            match event {
                MediaEvent::VideoConfig(c) => config = Some(c),
                MediaEvent::Packet(p) if p.keyframe && p.track == TrackKind::Video => {
                    if let Some(c) = &config {
                        if schedule.due(p.pts) {
                            // Busy with the previous one: this keyframe is skipped.
                            let _ = tx.try_send((c.clone(), p));
                        }
                    }
                }
                MediaEvent::End(_) => break,
                _ => {}
            }
        }
    });
}

fn run(
    rx: &std::sync::mpsc::Receiver<(Arc<VideoConfig>, crate::media::Packet)>,
    stream: &LiveStream,
) {
    let mut decoder: Option<KeyframeDecoder> = None;
    let mut maker = JpegMaker::default();
    let mut failures = crate::util::log_throttle::RateLimit::new(Duration::from_secs(60));
    while let Ok((config, packet)) = rx.recv() {
        let result = (|| {
            if decoder.as_ref().is_none_or(|d| d.config != config) {
                decoder = Some(KeyframeDecoder::open(config)?);
            }
            let picture = match decoder.as_mut() {
                Some(d) => d.decode(&packet)?,
                None => return Ok(()),
            };
            stream.set_thumbnail(maker.encode(&picture)?);
            Ok::<(), TranscodeError>(())
        })();
        if let Err(e) = result {
            if let Some(suppressed) = failures.check() {
                tracing::warn!(error = %e, suppressed, "no thumbnail from this keyframe");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thumbnails_fit_the_box_keep_the_aspect_and_never_upscale() {
        assert_eq!(size_for(1920, 1080), (640, 360));
        assert_eq!(size_for(1280, 720), (640, 360));
        assert_eq!(size_for(320, 180), (320, 180));
        assert_eq!(size_for(1080, 1920), (202, 360));
        assert_eq!(size_for(1440, 1080), (480, 360));
        assert_eq!(size_for(0, 0), (2, 2));
        assert_eq!(size_for(1, 1), (2, 2));
    }

    #[test]
    fn a_thumbnail_is_due_once_per_interval_of_media_time() {
        let t = i64::from(VIDEO_TIMESCALE);
        let mut s = Schedule::new(5);
        assert!(s.due(0));
        assert!(!s.due(2 * t));
        assert!(!s.due(4 * t));
        assert!(s.due(5 * t));
        assert!(!s.due(9 * t));
        // A timestamp reset (a new source) starts over.
        assert!(s.due(t));
        assert!(!Schedule::new(0).due(0));
    }

    #[test]
    fn a_decoded_picture_becomes_a_jpeg_of_the_thumbnail_size() {
        ff::init().unwrap();
        let mut picture = frame::Video::new(Pixel::YUV420P, 1280, 720);
        for plane in 0..3 {
            picture
                .data_mut(plane)
                .fill(if plane == 0 { 200 } else { 128 });
        }
        let thumb = JpegMaker::default().encode(&picture).unwrap();
        assert_eq!((thumb.width, thumb.height), (640, 360));
        // JPEG SOI and EOI markers.
        assert_eq!(&thumb.jpeg[..2], &[0xFF, 0xD8]);
        assert_eq!(&thumb.jpeg[thumb.jpeg.len() - 2..], &[0xFF, 0xD9]);
    }
}
