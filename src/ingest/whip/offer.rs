//! What an SDP offer (or answer) asks for, read before it reaches the WebRTC stack: WHIP
//! (RFC 9725 §4.2) wants an error, never a partial answer, when the offer cannot be served as a
//! whole. Sans-IO and bounded; str0m parses the SDP again to build the answer (its parser does
//! not expose what it dropped, which is what the errors here name).

use std::collections::HashMap;

/// Lines an offer may have: a browser's offer has ~100, OBS's fewer.
const MAX_LINES: usize = 4000;

/// One video or audio section of an SDP.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Section {
    pub kind: String,
    pub port: u32,
    /// The client sends media in it (`sendonly`/`sendrecv`, the default).
    pub sends: bool,
    /// Codec names as written in `a=rtpmap` (lowercase), in the section's order, with the
    /// payload type's fmtp parameters.
    pub codecs: Vec<(String, String)>,
    pub simulcast: bool,
}

/// What livegate accepts from a client; the same switches build the WebRTC codec list.
#[derive(Debug, Clone, Copy)]
pub struct Accepts {
    pub h264: bool,
    pub vp8: bool,
    pub vp9: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OfferError {
    /// 400: not an SDP at all.
    #[error("malformed SDP: {0}")]
    Malformed(String),
    /// 406: nothing in it that livegate can take.
    #[error("{0}")]
    NotAcceptable(String),
    /// 422: well-formed, but asks for something WHIP ingest does not do here.
    #[error("{0}")]
    Unprocessable(String),
}

/// The media sections of an SDP, in order.
pub fn sections(sdp: &str) -> Result<Vec<Section>, OfferError> {
    let malformed = |m: &str| OfferError::Malformed(m.to_string());
    let mut lines = sdp.lines().map(|l| l.trim_end_matches('\r'));
    if lines.next() != Some("v=0") {
        return Err(malformed("it does not start with v=0"));
    }
    let mut out: Vec<Section> = Vec::new();
    let mut rtpmap: HashMap<String, String> = HashMap::new();
    let mut fmtp: HashMap<String, String> = HashMap::new();
    let mut order: Vec<String> = Vec::new();
    let mut count = 1;
    let finish = |section: Option<&mut Section>,
                  order: &mut Vec<String>,
                  rtpmap: &mut HashMap<String, String>,
                  fmtp: &mut HashMap<String, String>| {
        if let Some(s) = section {
            for pt in order.iter() {
                if let Some(name) = rtpmap.get(pt) {
                    let params = fmtp.get(pt).cloned().unwrap_or_default();
                    s.codecs.push((name.clone(), params));
                }
            }
        }
        order.clear();
        rtpmap.clear();
        fmtp.clear();
    };
    for line in lines {
        count += 1;
        if count > MAX_LINES {
            return Err(malformed("too many lines"));
        }
        if line.is_empty() {
            continue;
        }
        let Some((kind, value)) = line.split_once('=') else {
            return Err(malformed("a line without '='"));
        };
        if kind.len() != 1 {
            return Err(malformed("a line whose type is not one letter"));
        }
        match kind {
            "m" => {
                finish(out.last_mut(), &mut order, &mut rtpmap, &mut fmtp);
                let mut parts = value.split(' ');
                let media = parts.next().unwrap_or_default().to_ascii_lowercase();
                let port = parts
                    .next()
                    .and_then(|p| p.split('/').next())
                    .and_then(|p| p.parse::<u32>().ok())
                    .ok_or_else(|| malformed("an m= line without a port"))?;
                let _proto = parts
                    .next()
                    .ok_or_else(|| malformed("an m= line without a protocol"))?;
                order = parts.map(str::to_string).collect();
                out.push(Section {
                    kind: media,
                    port,
                    sends: true,
                    ..Section::default()
                });
            }
            "a" => {
                let Some(section) = out.last_mut() else {
                    continue; // session-level attributes
                };
                let (name, rest) = value.split_once(':').unwrap_or((value, ""));
                match name {
                    "sendonly" | "sendrecv" => section.sends = true,
                    "recvonly" | "inactive" => section.sends = false,
                    "simulcast" => section.simulcast = true,
                    "rtpmap" => {
                        if let Some((pt, codec)) = rest.split_once(' ') {
                            let codec = codec.split('/').next().unwrap_or_default();
                            rtpmap.insert(pt.to_string(), codec.to_ascii_lowercase());
                        }
                    }
                    "fmtp" => {
                        if let Some((pt, params)) = rest.split_once(' ') {
                            fmtp.insert(pt.to_string(), params.to_ascii_lowercase());
                        }
                    }
                    _ => {}
                }
            }
            _ => {}
        }
    }
    finish(out.last_mut(), &mut order, &mut rtpmap, &mut fmtp);
    Ok(out)
}

fn fmtp_value<'a>(params: &'a str, key: &str) -> Option<&'a str> {
    params
        .split(';')
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v)
}

/// Whether livegate can take this video codec (name and fmtp as in [`Section::codecs`]).
pub fn video_usable(accepts: Accepts, name: &str, params: &str) -> bool {
    match name {
        "h264" => accepts.h264 && fmtp_value(params, "packetization-mode") == Some("1"),
        "vp8" => accepts.vp8,
        "vp9" => accepts.vp9 && fmtp_value(params, "profile-id").is_none_or(|p| p == "0"),
        _ => false,
    }
}

/// Checks an offer: at most one audio and one video track sent, no simulcast, and a codec
/// livegate can take in each. Returns the number of (audio, video) tracks.
pub fn check(sdp: &str, accepts: Accepts) -> Result<(usize, usize), OfferError> {
    let sections = sections(sdp)?;
    let mut audio = 0;
    let mut video = 0;
    for s in sections.iter().filter(|s| s.sends && s.port != 0) {
        match s.kind.as_str() {
            "audio" => {
                audio += 1;
                if !s.codecs.iter().any(|(name, _)| name == "opus") {
                    return Err(OfferError::NotAcceptable(format!(
                        "no usable audio codec: offered {}; livegate takes Opus",
                        names(&s.codecs)
                    )));
                }
            }
            "video" => {
                video += 1;
                if s.simulcast {
                    return Err(OfferError::Unprocessable(
                        "simulcast is not supported: send one encoding (the ladder makes the renditions)".into(),
                    ));
                }
                if !s.codecs.iter().any(|(n, p)| video_usable(accepts, n, p)) {
                    return Err(OfferError::NotAcceptable(format!(
                        "no usable video codec: offered {}; livegate takes {}",
                        names(&s.codecs),
                        accepted_names(accepts)
                    )));
                }
            }
            _ => {}
        }
    }
    if audio > 1 || video > 1 {
        return Err(OfferError::Unprocessable(format!(
            "one audio and one video track at most (offered {audio} audio, {video} video)"
        )));
    }
    if audio + video == 0 {
        return Err(OfferError::Unprocessable(
            "the offer sends no audio or video".into(),
        ));
    }
    Ok((audio, video))
}

/// Checks that an answer took every track the offer sends (str0m rejects what it cannot
/// match by setting the port to 0 or listing no codec).
pub fn answer_complete(offer: (usize, usize), answer: &str) -> Result<(), OfferError> {
    let sections = sections(answer)?;
    let taken = |kind: &str| {
        sections
            .iter()
            .filter(|s| s.kind == kind && s.port != 0 && !s.codecs.is_empty())
            .count()
    };
    if taken("audio") < offer.0 || taken("video") < offer.1 {
        return Err(OfferError::NotAcceptable(
            "the offer's codecs could not be matched".into(),
        ));
    }
    Ok(())
}

fn names(codecs: &[(String, String)]) -> String {
    let mut v: Vec<&str> = codecs
        .iter()
        .map(|(n, _)| n.as_str())
        .filter(|n| !matches!(*n, "rtx" | "red" | "ulpfec" | "flexfec-03"))
        .collect();
    v.dedup();
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

fn accepted_names(a: Accepts) -> String {
    let mut v = Vec::new();
    if a.h264 {
        v.push("H.264 (packetization-mode 1)");
    }
    if a.vp8 {
        v.push("VP8");
    }
    if a.vp9 {
        v.push("VP9 profile 0");
    }
    v.join(", ")
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    pub const ALL: Accepts = Accepts {
        h264: true,
        vp8: true,
        vp9: true,
    };

    /// A Chromium 156 offer (audio + video, trimmed of extmaps), as `fetch` POSTs it.
    pub const CHROMIUM: &str = include_str!("testdata/chromium-offer.sdp");
    /// An OBS 30 offer: no candidates, Opus in mid 0, H.264 in mid 1.
    pub const OBS: &str = include_str!("testdata/obs-offer.sdp");

    fn with_video(codecs: &str) -> String {
        format!(
            "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96 97\r\na=sendonly\r\n{codecs}"
        )
    }

    #[test]
    fn browser_and_obs_offers_pass() {
        assert_eq!(check(CHROMIUM, ALL), Ok((1, 1)));
        assert_eq!(check(OBS, ALL), Ok((1, 1)));
    }

    #[test]
    fn codecs_nothing_can_serve_are_named() {
        let av1 = with_video("a=rtpmap:96 AV1/90000\r\na=rtpmap:97 rtx/90000\r\n");
        let e = check(&av1, ALL).unwrap_err();
        assert!(
            matches!(&e, OfferError::NotAcceptable(m) if m.contains("av1")),
            "{e}"
        );
        let vp9_2 = with_video("a=rtpmap:96 VP9/90000\r\na=fmtp:96 profile-id=2\r\n");
        assert!(matches!(
            check(&vp9_2, ALL),
            Err(OfferError::NotAcceptable(_))
        ));
        let h264_pm0 = with_video(
            "a=rtpmap:96 H264/90000\r\na=fmtp:96 packetization-mode=0;profile-level-id=42e01f\r\n",
        );
        assert!(matches!(
            check(&h264_pm0, ALL),
            Err(OfferError::NotAcceptable(_))
        ));
        let vp9_0 = with_video("a=rtpmap:96 VP9/90000\r\na=fmtp:96 profile-id=0\r\n");
        assert_eq!(check(&vp9_0, ALL), Ok((0, 1)));
        let no_vp9 = Accepts { vp9: false, ..ALL };
        assert!(matches!(
            check(&vp9_0, no_vp9),
            Err(OfferError::NotAcceptable(_))
        ));
        let pcmu = "v=0\r\ns=-\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=rtpmap:0 PCMU/8000\r\n";
        assert!(
            matches!(check(pcmu, ALL), Err(OfferError::NotAcceptable(m)) if m.contains("pcmu"))
        );
    }

    #[test]
    fn two_video_tracks_or_simulcast_or_nothing_are_unprocessable() {
        let one = "m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=rtpmap:96 VP8/90000\r\n";
        let two = format!("v=0\r\ns=-\r\n{one}{one}");
        assert!(matches!(
            check(&two, ALL),
            Err(OfferError::Unprocessable(_))
        ));
        let simulcast = format!("v=0\r\ns=-\r\n{one}a=simulcast:send a;b\r\n");
        assert!(
            matches!(check(&simulcast, ALL), Err(OfferError::Unprocessable(m)) if m.contains("simulcast"))
        );
        let recvonly = format!("v=0\r\ns=-\r\n{one}a=recvonly\r\n");
        assert!(matches!(
            check(&recvonly, ALL),
            Err(OfferError::Unprocessable(_))
        ));
        let data_only = "v=0\r\ns=-\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n";
        assert!(matches!(
            check(data_only, ALL),
            Err(OfferError::Unprocessable(_))
        ));
    }

    #[test]
    fn garbage_is_malformed() {
        for bad in [
            "",
            "hello",
            "v=0\r\nm=video\r\n",
            "v=0\r\nxx\r\n",
            "v=1\r\n",
        ] {
            assert!(
                matches!(check(bad, ALL), Err(OfferError::Malformed(_))),
                "{bad:?}"
            );
        }
        let long = format!("v=0\r\n{}", "a=x\r\n".repeat(MAX_LINES + 1));
        assert!(matches!(check(&long, ALL), Err(OfferError::Malformed(_))));
    }

    #[test]
    fn answers_that_dropped_a_track_are_caught() {
        let answer = "v=0\r\ns=-\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=rtpmap:111 opus/48000/2\r\nm=video 0 UDP/TLS/RTP/SAVPF 0\r\n";
        assert!(answer_complete((1, 1), answer).is_err());
        assert!(answer_complete((1, 0), answer).is_ok());
    }

    proptest! {
        #[test]
        fn any_text_gets_an_answer_not_a_panic(text in "(v=0\r\n)?([amcs]=[ -~]{0,40}\r\n){0,20}") {
            let _ = check(&text, ALL);
        }
    }
}
