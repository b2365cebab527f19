//! A WHIP publisher that is not a browser: str0m as the client, sending what OBS sends — an
//! offer without a single ICE candidate, Opus in mid 0 and H.264 High in mid 1, parameter sets
//! as separate NAL units, frames from the real x264 and libopus (ffmpeg CLI), with RTP clocks that
//! wrap mid-stream.

use std::net::UdpSocket;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use str0m::change::SdpAnswer;
use str0m::format::Codec;
use str0m::media::{Direction, Frequency, MediaKind, MediaTime};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, RtcConfig};

use crate::common::{ffprobe, in_loopback_namespace, Server};

/// Access units of an Annex B H.264 file, split at each access unit delimiter.
fn access_units(data: &[u8]) -> Vec<Vec<u8>> {
    let mut starts = Vec::new();
    let mut i = 0;
    while i + 4 <= data.len() {
        if data[i..i + 3] == [0, 0, 1] && data[i + 3] & 0x1f == 9 {
            // Include a leading zero of a 4-byte start code.
            starts.push(if i > 0 && data[i - 1] == 0 { i - 1 } else { i });
            i += 3;
        } else {
            i += 1;
        }
    }
    starts.push(data.len());
    starts
        .windows(2)
        .map(|w| data[w[0]..w[1]].to_vec())
        .collect()
}

/// The packets of an Ogg Opus file, without its two header packets.
fn ogg_packets(data: &[u8]) -> Vec<Vec<u8>> {
    let mut packets = Vec::new();
    let mut current = Vec::new();
    let mut at = 0;
    while at + 27 <= data.len() && &data[at..at + 4] == b"OggS" {
        let segments = usize::from(data[at + 26]);
        let table = &data[at + 27..at + 27 + segments];
        let mut body = at + 27 + segments;
        for &len in table {
            current.extend_from_slice(&data[body..body + usize::from(len)]);
            body += usize::from(len);
            if len < 255 {
                packets.push(std::mem::take(&mut current));
            }
        }
        at = body;
    }
    packets.into_iter().skip(2).collect()
}

/// The media: 3 s of 1280x720 then 3 s of 640x360 (a browser lowering its resolution under
/// bandwidth pressure), H.264 High from x264 with an access unit delimiter per frame; and 6 s of
/// Opus in 20 ms packets.
fn encode(dir: &Path) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let mut video = Vec::new();
    for (i, size) in ["1280x720", "640x360"].iter().enumerate() {
        let file = dir.join(format!("v{i}.h264"));
        let status = Command::new("ffmpeg")
            .args([
                "-hide_banner",
                "-loglevel",
                "error",
                "-y",
                "-f",
                "lavfi",
                "-i",
            ])
            .arg(format!("testsrc2=size={size}:rate=30"))
            .args([
                "-t",
                "3",
                "-c:v",
                "libx264",
                "-profile:v",
                "high",
                "-pix_fmt",
                "yuv420p",
            ])
            .args(["-preset", "ultrafast"])
            .args([
                "-x264-params",
                "aud=1:keyint=60:min-keyint=60:bframes=0:scenecut=0",
            ])
            .args(["-bsf:v", "h264_mp4toannexb", "-f", "h264"])
            .arg(&file)
            .status()
            .expect("ffmpeg");
        assert!(status.success());
        video.extend(access_units(&std::fs::read(file).unwrap()));
    }
    let audio = dir.join("a.ogg");
    let status = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y"])
        .args([
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:sample_rate=48000",
            "-t",
            "6",
        ])
        .args(["-c:a", "libopus", "-frame_duration", "20", "-f", "ogg"])
        .arg(&audio)
        .status()
        .expect("ffmpeg");
    assert!(status.success());
    (video, ogg_packets(&std::fs::read(audio).unwrap()))
}

/// Frame `i`'s time: a variable frame rate (22 ms and 44 ms apart in turn, 30 fps on average).
fn vfr_ms(i: usize) -> u64 {
    (i as u64 / 2) * 66 + if i % 2 == 1 { 22 } else { 0 }
}

/// The RTP clocks start 3 s before their 32-bit timestamps wrap (str0m sends the low 32 bits),
/// so the wrap falls mid-stream for both tracks, as it does every 13 h 15 min at 90 kHz.
const RTP_START_90K: u64 = (1 << 32) - 3 * 90_000;
const RTP_START_48K: u64 = (1 << 32) - 3 * 48_000;

#[test]
fn str0m_publishes_an_obs_style_offer_without_candidates_across_the_rtp_wrap() {
    if in_loopback_namespace(
        "whip_client::str0m_publishes_an_obs_style_offer_without_candidates_across_the_rtp_wrap",
        true,
    ) {
        return;
    }
    let server = Server::start();
    let key = server.add_key("obs");
    let (video, audio) = encode(server.dir.path());
    assert!(
        video.len() >= 170 && audio.len() >= 290,
        "{} {}",
        video.len(),
        audio.len()
    );

    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let local = socket.local_addr().unwrap();
    let mut config = RtcConfig::new().clear_codecs().enable_opus(true, false);
    config
        .codec_config()
        .add_h264(96.into(), None, true, 0x64001f);
    let mut rtc = config.build(Instant::now());
    rtc.add_local_candidate(Candidate::host(local, "udp").unwrap());
    let mut sdp = rtc.sdp_api();
    let audio_mid = sdp.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
    let video_mid = sdp.add_media(MediaKind::Video, Direction::SendOnly, None, None, None);
    let (offer, pending) = sdp.apply().expect("an offer");
    // What OBS sends: no candidates at all.
    let offer: String = offer
        .to_sdp_string()
        .lines()
        .filter(|l| !l.starts_with("a=candidate") && !l.starts_with("a=end-of-candidates"))
        .map(|l| format!("{l}\r\n"))
        .collect();
    assert!(!offer.contains("candidate"));

    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut response = agent
        .post(&server.url("/whip/obs"))
        .header("Content-Type", "application/sdp")
        .header("Authorization", &format!("Bearer {key}"))
        .send(&offer)
        .expect("POST");
    assert_eq!(response.status(), 201);
    let location = response.headers()["location"].to_str().unwrap().to_string();
    let answer = response.body_mut().read_to_string().unwrap();
    let answer = SdpAnswer::from_sdp_string(&answer).expect("an SDP answer");
    rtc.sdp_api()
        .accept_answer(pending, answer)
        .expect("answer accepted");

    socket
        .set_read_timeout(Some(Duration::from_millis(5)))
        .unwrap();
    let start = Instant::now();
    let mut connected_at = None;
    let mut keyframe_requests = 0;
    let (mut v, mut a) = (0usize, 0usize);
    let mut buf = vec![0u8; 2000];
    let deadline = start + Duration::from_secs(30);
    while Instant::now() < deadline && (v < video.len() || a < audio.len()) {
        // Media paced in real time from the moment ICE and DTLS are up.
        if let Some(t0) = connected_at {
            let elapsed = Instant::now().duration_since(t0);
            while v < video.len() && Duration::from_millis(vfr_ms(v)) <= elapsed {
                let writer = rtc.writer(video_mid).expect("video writer");
                let pt = writer
                    .payload_params()
                    .find(|p| p.spec().codec == Codec::H264)
                    .expect("H.264 negotiated")
                    .pt();
                let time = MediaTime::new(RTP_START_90K + vfr_ms(v) * 90, Frequency::NINETY_KHZ);
                writer
                    .write(pt, Instant::now(), time, video[v].clone())
                    .expect("write video");
                v += 1;
            }
            while a < audio.len() && Duration::from_millis(a as u64 * 20) <= elapsed {
                let writer = rtc.writer(audio_mid).expect("audio writer");
                let pt = writer.payload_params().next().expect("Opus").pt();
                let time =
                    MediaTime::new(RTP_START_48K + a as u64 * 960, Frequency::FORTY_EIGHT_KHZ);
                writer
                    .write(pt, Instant::now(), time, audio[a].clone())
                    .expect("write audio");
                a += 1;
            }
        }
        loop {
            match rtc.poll_output().expect("poll") {
                Output::Timeout(_) => break,
                Output::Transmit(t) => {
                    socket.send_to(&t.contents, t.destination).unwrap();
                }
                Output::Event(Event::Connected) => connected_at = Some(Instant::now()),
                Output::Event(Event::KeyframeRequest(_)) => keyframe_requests += 1,
                Output::Event(Event::IceConnectionStateChange(
                    IceConnectionState::Disconnected,
                )) => {
                    panic!("ICE disconnected")
                }
                Output::Event(_) => {}
            }
        }
        let input = match socket.recv_from(&mut buf) {
            Ok((n, source)) => Input::Receive(
                Instant::now(),
                Receive::new(Protocol::Udp, source, local, &buf[..n]).expect("datagram"),
            ),
            Err(_) => Input::Timeout(Instant::now()),
        };
        rtc.handle_input(input).expect("input");
    }
    assert!(
        connected_at.is_some(),
        "ICE and DTLS connected without candidates in the offer"
    );
    assert_eq!((v, a), (video.len(), audio.len()), "all media sent");

    let probe = ffprobe(&server.url("/live/obs/720p/index.m3u8"));
    let text = probe.to_string();
    assert!(
        text.contains("\"h264\"") && text.contains("\"aac\""),
        "{probe}"
    );
    assert!(
        text.contains("\"height\":720"),
        "the rungs keep their sizes: {probe}"
    );
    let streams = server.get("/api/v1/streams").1;
    assert!(streams.contains("\"protocol\":\"whip\""), "{streams}");
    assert!(
        keyframe_requests >= 1,
        "livegate asked for a keyframe at the start"
    );

    let done = agent
        .delete(&location)
        .header("Authorization", &format!("Bearer {key}"))
        .call()
        .expect("DELETE");
    assert_eq!(done.status(), 200);
    // The resolution change did not restart the ladder, and the variable frame rate did not
    // move the keyframe grid: every rung cut the same ~2 s segments, without a discontinuity.
    let mut rungs = Vec::new();
    for rung in ["360p", "480p", "720p"] {
        let playlist = server.wait_endlist("obs", rung, Duration::from_secs(15));
        let durations: Vec<f32> = playlist.segments.iter().map(|s| s.duration).collect();
        assert!(
            playlist.segments.iter().all(|s| !s.discontinuity),
            "{rung}: a discontinuity"
        );
        let whole = &durations[..durations.len() - 1];
        assert!(
            whole.iter().all(|d| (1.8..=2.2).contains(d)),
            "{rung}: segments off the 2 s grid: {durations:?}"
        );
        rungs.push(durations);
    }
    assert!(
        rungs.windows(2).all(|w| w[0] == w[1]),
        "rungs aligned: {rungs:?}"
    );
    let logs = server.logs();
    assert_eq!(
        logs.matches("ladder ready").count(),
        1,
        "one ladder for the session"
    );
    assert!(
        logs.contains("source picture size changed"),
        "the size change was seen"
    );
}
