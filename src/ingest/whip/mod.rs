//! WHIP ingest (RFC 9725): a browser or OBS publishes over WebRTC with the same stream key as
//! RTMP. The HTTP side (`http/whip.rs`) hands an offer here; this checks it ([`offer`]), checks
//! the key through the shared [`PublishGate`] without publishing yet, answers with str0m
//! (ICE-lite, every server candidate in the answer, DTLS-SRTP) and registers the session with
//! the [`driver`] task that owns the one UDP socket. Once ICE and DTLS connect, the gate
//! publishes the stream (taking over a live one); a failed attempt never touches a live stream.
//! Frames then flow through [`track`] and [`clock`] into the hub as from any other ingest.

mod clock;
mod driver;
mod keyframe;
pub mod offer;
mod session;
mod track;

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;
use sha2::{Digest, Sha256};
use str0m::change::SdpOffer;
use str0m::format::{Codec, FormatParams};
use str0m::media::Frequency;
use str0m::{Candidate, IceCreds, RtcConfig};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::config::{IceServer, WhipConfig};
use crate::ingest::gate::{PublishGate, Refusal};
use crate::metrics::Metrics;
use driver::{Command, Driver};
use offer::{Accepts, OfferError};
use session::Session;

/// Why a WHIP request failed; `http/whip.rs` maps each to the status RFC 9725 names.
#[derive(Debug, thiserror::Error)]
pub enum WhipError {
    /// 401 with `WWW-Authenticate: Bearer`.
    #[error("{0}")]
    Unauthorized(String),
    /// 403: a valid key, but for another user than the URL names.
    #[error("the stream key does not belong to this user")]
    Forbidden,
    /// 403: the site's publish-authorization hook refused the user.
    #[error("publish refused by the site")]
    Denied,
    /// 400, 406 or 422.
    #[error(transparent)]
    Offer(#[from] OfferError),
    /// 503: `max_sessions` reached.
    #[error("too many WebRTC sessions; try again later")]
    Full,
    /// 503: the key store cannot answer, or the server is shutting down.
    #[error("{0}")]
    Unavailable(String),
    #[error("no such WHIP session")]
    NotFound,
    /// 428: PATCH without If-Match.
    #[error("If-Match is required")]
    PreconditionRequired,
    /// 412: If-Match names another ETag.
    #[error("If-Match does not match the session's ETag")]
    PreconditionFailed,
    /// 422: an ICE restart (new ufrag in a PATCH), which livegate does not do: publish again.
    #[error("ICE restarts are not supported; end this session and publish again")]
    IceRestart,
    /// 400: a trickle fragment that does not parse.
    #[error("malformed trickle-ice-sdpfrag: {0}")]
    BadFragment(String),
    #[error("internal error: {0}")]
    Internal(String),
}

/// A successful offer: what the 201 carries.
#[derive(Debug)]
pub struct Answer {
    pub sdp: String,
    pub user: String,
    pub id: String,
    pub etag: String,
}

/// A parsed `application/trickle-ice-sdpfrag` body.
#[derive(Debug, Default)]
pub struct Fragment {
    pub ufrag: Option<String>,
    pub candidates: Vec<Candidate>,
}

impl Fragment {
    /// Reads the ufrag and the candidates; other lines (m=, a=mid, a=ice-pwd,
    /// a=end-of-candidates) are not needed by an ICE-lite server.
    pub fn parse(body: &str) -> Result<Fragment, WhipError> {
        let mut f = Fragment::default();
        for line in body.lines().map(|l| l.trim_end_matches('\r')).take(1000) {
            if let Some(u) = line.strip_prefix("a=ice-ufrag:") {
                f.ufrag = Some(u.trim().to_string());
            } else if let Some(c) = line.strip_prefix("a=") {
                if c.starts_with("candidate:") {
                    let candidate = Candidate::from_sdp_string(c)
                        .map_err(|e| WhipError::BadFragment(e.to_string()))?;
                    f.candidates.push(candidate);
                }
            }
        }
        Ok(f)
    }
}

pub struct Whip {
    config: WhipConfig,
    gate: PublishGate,
    candidates: Vec<SocketAddr>,
    accepts: Accepts,
    crypto: Arc<str0m::config::CryptoProvider>,
    commands: mpsc::Sender<Command>,
    live: Arc<AtomicUsize>,
    metrics: Arc<Metrics>,
}

fn key_hash(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

fn random_hex(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    rand::rng().fill(&mut b[..]);
    hex::encode(b)
}

impl Whip {
    /// Binds the UDP socket and starts the driver task (it ends with `stop`).
    pub async fn start(
        config: &WhipConfig,
        gate: PublishGate,
        metrics: Arc<Metrics>,
        stop: CancellationToken,
    ) -> std::io::Result<Arc<Whip>> {
        let listen: SocketAddr = config
            .udp_listen
            .parse()
            .map_err(|_| std::io::Error::other("whip.udp_listen is not IP:PORT"))?;
        let socket = bind_udp(listen)?;
        let port = socket.local_addr()?.port();
        let candidates = candidates(config, listen.ip(), port);
        if candidates.is_empty() {
            return Err(std::io::Error::other(
                "no address to advertise for WHIP: set whip.advertise",
            ));
        }
        tracing::info!(udp = %format!("{}:{port}", listen.ip()),
            candidates = %candidates.iter().map(|c| c.to_string()).collect::<Vec<_>>().join(" "),
            "WHIP ingest listening");
        let (tx, rx) = mpsc::channel(256);
        let live = Arc::new(AtomicUsize::new(0));
        let driver = Driver {
            socket: Arc::new(socket),
            candidates: candidates.clone(),
            config: config.clone(),
            gate: gate.clone(),
            metrics: metrics.clone(),
            live: live.clone(),
            commands: rx,
            commands_tx: tx.downgrade(),
            stop,
        };
        tokio::spawn(driver.run());
        Ok(Arc::new(Whip {
            config: config.clone(),
            gate,
            candidates,
            accepts: Accepts {
                h264: config.h264,
                vp8: config.vp8,
                vp9: config.vp9,
            },
            crypto: Arc::new(str0m::crypto::from_feature_flags()),
            commands: tx,
            live,
            metrics,
        }))
    }

    pub fn ice_servers(&self) -> &[IceServer] {
        &self.config.ice_servers
    }

    pub fn max_sdp_bytes(&self) -> usize {
        self.config.max_sdp_kib.saturating_mul(1024)
    }

    /// The UDP address media goes to, as advertised.
    pub fn candidates(&self) -> &[SocketAddr] {
        &self.candidates
    }

    /// Handles a POST: `path_user` is the user the URL names (None for `POST /whip`).
    pub async fn offer(
        &self,
        path_user: Option<&str>,
        key: &str,
        sdp: &str,
    ) -> Result<Answer, WhipError> {
        let tracks = offer::check(sdp, self.accepts).inspect_err(|e| {
            tracing::info!(error = %e, "WHIP offer refused");
            self.metrics.whip_failed(match e {
                OfferError::Malformed(_) => "malformed_offer",
                _ => "unusable_offer",
            });
        })?;
        if self.live.load(Ordering::Relaxed) >= self.config.max_sessions {
            self.metrics.whip_failed("full");
            return Err(WhipError::Full);
        }
        // A span of its own: the gate names the key's user in it.
        let check = self
            .gate
            .check_as(key, "whip")
            .instrument(tracing::info_span!("key", user = tracing::field::Empty));
        let user = match check.await {
            Ok(user) => user,
            Err(Refusal::Unavailable(m)) => return Err(WhipError::Unavailable(m)),
            Err(Refusal::Denied { .. }) => {
                self.metrics.whip_failed("auth_hook_denied");
                return Err(WhipError::Denied);
            }
            Err(_) => {
                self.metrics.whip_failed("bad_key");
                return Err(WhipError::Unauthorized(
                    "invalid or revoked stream key".into(),
                ));
            }
        };
        if path_user.is_some_and(|p| p != user) {
            tracing::warn!(key_user = %user, "WHIP publish refused: the key belongs to another user");
            self.metrics.whip_failed("wrong_user");
            return Err(WhipError::Forbidden);
        }
        if self.gate.hub().is_closed() {
            return Err(WhipError::Unavailable("the server is shutting down".into()));
        }
        let (ufrag, pass) = (random_hex(8), random_hex(16));
        let mut rtc_config = RtcConfig::new()
            .set_ice_lite(true)
            .set_local_ice_credentials(IceCreds {
                ufrag: ufrag.clone(),
                pass,
            })
            .set_crypto_provider(self.crypto.clone())
            // The jitter buffer must hold a whole keyframe (OBS's exceed str0m's default 30).
            .set_reordering_size_video(1000)
            .set_stats_interval(Some(Duration::from_secs(1)))
            .clear_codecs();
        self.codecs(&mut rtc_config);
        let mut rtc = rtc_config.build(Instant::now());
        for addr in &self.candidates {
            let candidate = Candidate::host(*addr, "udp")
                .map_err(|e| WhipError::Internal(format!("candidate {addr}: {e}")))?;
            rtc.add_local_candidate(candidate);
        }
        let parsed = SdpOffer::from_sdp_string(sdp)
            .map_err(|e| WhipError::Offer(OfferError::Malformed(e.to_string())))?;
        let answer = rtc
            .sdp_api()
            .accept_offer(parsed)
            .map_err(|e| WhipError::Offer(OfferError::NotAcceptable(e.to_string())))?;
        let answer = answer.to_sdp_string();
        offer::answer_complete(tracks, &answer)?;
        let id = random_hex(16);
        let etag = format!("\"{}\"", random_hex(8));
        let remote_ufrag = sdp
            .lines()
            .find_map(|l| l.trim_end().strip_prefix("a=ice-ufrag:"))
            .map(str::to_string);
        let mut session = Session::new(
            id.clone(),
            user.clone(),
            key_hash(key),
            etag.clone(),
            remote_ufrag,
            ufrag,
            rtc,
            Instant::now(),
        );
        session.admit_key = Some(key.to_string());
        let (reply, answered) = oneshot::channel();
        self.commands
            .send(Command::Add {
                session: Box::new(session),
                reply,
            })
            .await
            .map_err(|_| WhipError::Unavailable("WHIP ingest is shutting down".into()))?;
        answered
            .await
            .map_err(|_| WhipError::Unavailable("WHIP ingest is shutting down".into()))??;
        tracing::info!(%user, session = %&id[..8], audio = tracks.0, video = tracks.1, "WHIP session answered");
        Ok(Answer {
            sdp: answer,
            user,
            id,
            etag,
        })
    }

    /// DELETE on the session URL.
    pub async fn delete(&self, user: &str, id: &str, key: &str) -> Result<(), WhipError> {
        let (reply, answered) = oneshot::channel();
        self.send(Command::Delete {
            user: user.to_string(),
            id: id.to_string(),
            key_hash: key_hash(key),
            reply,
        })
        .await?;
        answered.await.map_err(|_| WhipError::NotFound)?
    }

    /// PATCH with a trickle fragment: returns the session's ETag.
    pub async fn patch(
        &self,
        user: &str,
        id: &str,
        key: &str,
        if_match: Option<String>,
        fragment: Fragment,
    ) -> Result<String, WhipError> {
        let (reply, answered) = oneshot::channel();
        self.send(Command::Patch {
            user: user.to_string(),
            id: id.to_string(),
            key_hash: key_hash(key),
            if_match,
            fragment,
            reply,
        })
        .await?;
        answered.await.map_err(|_| WhipError::NotFound)?
    }

    async fn send(&self, command: Command) -> Result<(), WhipError> {
        self.commands
            .send(command)
            .await
            .map_err(|_| WhipError::Unavailable("WHIP ingest is shutting down".into()))
    }

    /// The codecs the answer may pick, in livegate's preference (the client's order decides).
    fn codecs(&self, rtc: &mut RtcConfig) {
        let c = rtc.codec_config();
        // str0m's default Opus fmtp has no stereo=1, so browsers would send mono.
        c.add_config(
            111.into(),
            None,
            Codec::Opus,
            Frequency::FORTY_EIGHT_KHZ,
            Some(2),
            FormatParams {
                min_p_time: Some(10),
                use_inband_fec: Some(true),
                stereo: Some(true),
                ..FormatParams::default()
            },
        );
        if self.config.h264 {
            // packetization-mode 1 only: browsers' constrained baseline, baseline, main and
            // constrained high; OBS's high.
            for (pt, rtx, profile) in [
                (102, 103, 0x42001f),
                (108, 109, 0x42e01f),
                (116, 117, 0x4d001f),
                (112, 113, 0x64001f),
                (123, 122, 0x640c1f),
            ] {
                c.add_h264(pt.into(), Some(rtx.into()), true, profile);
            }
        }
        if self.config.vp8 {
            c.enable_vp8(true);
        }
        if self.config.vp9 {
            c.add_config(
                98.into(),
                Some(99.into()),
                Codec::Vp9,
                Frequency::NINETY_KHZ,
                None,
                FormatParams {
                    profile_id: Some(0),
                    ..FormatParams::default()
                },
            );
        }
    }
}

/// Binds the shared socket with a large receive buffer: keyframes arrive as bursts of hundreds
/// of packets, and many sessions share it.
fn bind_udp(addr: SocketAddr) -> std::io::Result<tokio::net::UdpSocket> {
    let domain = socket2::Domain::for_address(addr);
    let socket = socket2::Socket::new(domain, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
    if addr.is_ipv6() {
        let _ = socket.set_only_v6(false);
    }
    if let Err(e) = socket.set_recv_buffer_size(4 << 20) {
        tracing::debug!(error = %e, "cannot raise the WHIP socket's receive buffer");
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    tokio::net::UdpSocket::from_std(socket.into())
}

/// The candidates to advertise: `advertise`, else the bound address, else every interface's
/// (loopback included, for local publishers).
fn candidates(config: &WhipConfig, bind: IpAddr, port: u16) -> Vec<SocketAddr> {
    if !config.advertise.is_empty() {
        return config
            .advertise
            .iter()
            .filter_map(|a| {
                a.parse::<SocketAddr>()
                    .ok()
                    .or_else(|| a.parse::<IpAddr>().ok().map(|ip| SocketAddr::new(ip, port)))
            })
            .collect();
    }
    if !bind.is_unspecified() {
        return vec![SocketAddr::new(bind, port)];
    }
    let mut out: Vec<SocketAddr> = if_addrs::get_if_addrs()
        .unwrap_or_default()
        .into_iter()
        .map(|i| i.ip())
        .filter(|ip| match ip {
            IpAddr::V4(_) => true,
            // Link-local IPv6 needs a scope id a candidate cannot carry.
            IpAddr::V6(v6) => bind.is_ipv6() && (v6.segments()[0] & 0xffc0) != 0xfe80,
        })
        .map(|ip| SocketAddr::new(ip, port))
        .collect();
    out.sort_by_key(|a| (a.ip().is_loopback(), a.is_ipv6()));
    out.dedup();
    out
}

/// Entry points for the fuzz targets (`fuzz/`): the sans-IO parts fed from raw bytes.
pub mod fuzzing {
    use std::time::Duration;

    use super::clock::{SenderReport, StreamClock};
    use super::track::{Frame, FrameCodec, Tracks};
    use crate::media::{MediaEvent, TrackKind};

    /// Frames as a WebRTC peer could send them, through the stream clock and the frame
    /// converter. `data` is a sequence of records: a flags byte (codec, keyframe, contiguous,
    /// sender report), a 4-byte RTP time, a 2-byte arrival step in ms, a 2-byte length, the
    /// payload. Returns the events, checked: video timestamps never go back.
    pub fn frames(mut data: &[u8]) -> Vec<MediaEvent> {
        let mut clock = StreamClock::new();
        let mut tracks = Tracks::default();
        let mut out = Vec::new();
        let mut arrival = Duration::ZERO;
        while data.len() >= 9 {
            let flags = data[0];
            let rtp = u32::from_be_bytes([data[1], data[2], data[3], data[4]]);
            arrival += Duration::from_millis(u64::from(u16::from_be_bytes([data[5], data[6]])));
            let len = usize::from(u16::from_be_bytes([data[7], data[8]])).min(data.len() - 9);
            let payload = &data[9..9 + len];
            data = &data[9 + len..];
            let codec = match flags & 3 {
                0 => FrameCodec::H264,
                1 => FrameCodec::Vp8,
                2 => FrameCodec::Vp9,
                _ => FrameCodec::Opus,
            };
            let kind = if codec == FrameCodec::Opus {
                TrackKind::Audio
            } else {
                TrackKind::Video
            };
            let report = (flags & 8 != 0).then(|| SenderReport {
                ntp_secs: f64::from(rtp) / 1000.0,
                rtp: rtp.rotate_left(7),
                packets: u32::from(flags >> 4),
            });
            let time = clock.map(kind, rtp, arrival, report);
            let frame = Frame {
                codec,
                data: payload,
                time,
                keyframe: flags & 4 != 0,
                contiguous: flags & 0x10 == 0,
            };
            let _ = tracks.frame(&frame, &mut out);
        }
        out
    }
}
