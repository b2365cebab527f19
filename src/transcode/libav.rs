//! The unsafe edges of ffmpeg-next that the transcoder needs (extradata, frame references),
//! decoder lookup by codec, and the transcoder's error type. Everything else uses ffmpeg-next's
//! safe API.

use ff::codec;
use ff::frame;
use ffmpeg_next as ff;

use crate::media::{AudioCodec, VideoCodec};

#[derive(Debug, thiserror::Error)]
pub enum TranscodeError {
    #[error("{what}: {source}")]
    Av {
        what: &'static str,
        source: ff::Error,
    },
    #[error("{0} is not available in this FFmpeg build")]
    MissingCodec(&'static str),
    #[error("no {0} decoder in this FFmpeg build; the stream cannot be served")]
    MissingDecoder(String),
    #[error("encoder produced unusable parameters: {0}")]
    Parameters(String),
    /// The source is over a configured limit: the publisher's session is ended.
    #[error(transparent)]
    Refused(#[from] super::limits::LimitError),
    #[error("the transcoder panicked: {0}")]
    Panicked(String),
}

impl TranscodeError {
    /// Whether the publisher's session must end too (nothing else can serve this source).
    pub fn ends_session(&self) -> bool {
        matches!(
            self,
            TranscodeError::MissingDecoder(_)
                | TranscodeError::Refused(_)
                | TranscodeError::Panicked(_)
        )
    }
}

pub fn av(what: &'static str) -> impl FnOnce(ff::Error) -> TranscodeError {
    move |source| TranscodeError::Av { what, source }
}

/// libav's decoder for a source codec. AV1 prefers libdav1d: FFmpeg 5.1's native AV1 decoder
/// only drives hardware.
pub fn video_decoder(codec: VideoCodec) -> Result<ff::Codec, TranscodeError> {
    let found = match codec {
        VideoCodec::H264 => ff::decoder::find(codec::Id::H264),
        VideoCodec::Hevc => ff::decoder::find(codec::Id::HEVC),
        VideoCodec::Av1 => ff::decoder::find_by_name("libdav1d"),
        VideoCodec::Vp8 => ff::decoder::find(codec::Id::VP8),
        VideoCodec::Vp9 => ff::decoder::find(codec::Id::VP9),
    };
    found.ok_or_else(|| TranscodeError::MissingDecoder(codec.name().to_string()))
}

pub fn audio_decoder(codec: AudioCodec) -> Result<ff::Codec, TranscodeError> {
    let found = match codec {
        AudioCodec::Aac => ff::decoder::find(codec::Id::AAC),
        AudioCodec::Opus => ff::decoder::find(codec::Id::OPUS),
    };
    found.ok_or_else(|| TranscodeError::MissingDecoder(codec.name().to_string()))
}

/// Copies codec configuration into a codec context. ffmpeg-next has no extradata setter; the
/// buffer is allocated with libav's allocator (and padding) so the context frees it itself.
pub fn set_extradata(ctx: &mut codec::context::Context, data: &[u8]) -> Result<(), TranscodeError> {
    // SAFETY: `ctx` is a valid, not yet opened AVCodecContext that owns its extradata; the new
    // buffer comes from av_mallocz with the required zeroed padding and replaces a null pointer
    // (fresh context), so nothing leaks or is freed twice.
    unsafe {
        let raw = ctx.as_mut_ptr();
        let padding = ff::ffi::AV_INPUT_BUFFER_PADDING_SIZE as usize;
        let buf = ff::ffi::av_mallocz(data.len() + padding) as *mut u8;
        if buf.is_null() {
            return Err(TranscodeError::Av {
                what: "allocating extradata",
                source: ff::Error::Other {
                    errno: ff::util::error::ENOMEM,
                },
            });
        }
        std::ptr::copy_nonoverlapping(data.as_ptr(), buf, data.len());
        (*raw).extradata = buf;
        (*raw).extradata_size = data.len() as i32;
    }
    Ok(())
}

/// Caps the pictures a decoder will allocate (`AVCodecContext.max_pixels`): a frame larger than
/// this, e.g. after an in-band SPS, fails to decode instead of allocating for it.
pub fn set_max_pixels(ctx: &mut codec::context::Context, max_pixels: u64) {
    // SAFETY: `ctx` is a valid, not yet opened AVCodecContext; max_pixels is a plain field.
    unsafe {
        (*ctx.as_mut_ptr()).max_pixels = i64::try_from(max_pixels).unwrap_or(i64::MAX);
    }
}

pub fn extradata(ctx: &codec::context::Context) -> Vec<u8> {
    // SAFETY: reads the opened context's extradata (pointer + size owned by the context).
    unsafe {
        let raw = ctx.as_ptr();
        if (*raw).extradata.is_null() || (*raw).extradata_size <= 0 {
            return Vec::new();
        }
        std::slice::from_raw_parts((*raw).extradata, (*raw).extradata_size as usize).to_vec()
    }
}

/// A new reference to the same decoded picture (no pixel copy; ffmpeg-next's `clone` copies).
pub fn frame_ref(frame: &frame::Video) -> Result<frame::Video, TranscodeError> {
    // SAFETY: av_frame_clone makes a new AVFrame that references the same refcounted buffers;
    // the returned pointer is owned by the new `Video`, which frees it on drop. The decoder's
    // frames are refcounted, and every user only reads the pixels.
    unsafe {
        let ptr = ff::ffi::av_frame_clone(frame.as_ptr());
        if ptr.is_null() {
            return Err(TranscodeError::Av {
                what: "referencing a frame",
                source: ff::Error::Other {
                    errno: ff::util::error::ENOMEM,
                },
            });
        }
        Ok(frame::Video::wrap(ptr))
    }
}

/// Sets a picture's quality (lambda), which a fixed-quality encoder (`AV_CODEC_FLAG_QSCALE`,
/// e.g. MJPEG) reads from each frame; ffmpeg-next has no setter for it.
pub fn set_frame_quality(frame: &mut frame::Video, lambda: i32) {
    // SAFETY: `frame` owns a valid AVFrame; `quality` is a plain int field.
    unsafe {
        (*frame.as_mut_ptr()).quality = lambda;
    }
}

/// Initializes libav once per process (codec registration, log level).
pub fn init_libav() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if let Err(e) = ff::init() {
            tracing::error!(error = %e, "libav initialization failed");
        }
        ff::util::log::set_level(ff::util::log::Level::Error);
    });
}
