//! Who may play, and who is watching: the access check every live HLS request passes, the viewer
//! it counts, and the client address behind trusted proxies.
//!
//! A player reaches a stream in one of three ways:
//! - `/live/<user>/index.m3u8[?token=T]`: the master; its variant URIs then carry the token
//!   (`t/<T>/…`) or a new session id (`s/<id>/…`), so every later request of that player names
//!   it without custom headers, relative URIs doing the rest.
//! - `/live/<user>/t/<token>/…`: a token stream (or a public one played with a token).
//! - `/live/<user>/s/<session>/…` or the bare `/live/<user>/<rendition>/…`: public streams only.

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use axum::http::{header, HeaderMap, StatusCode};

use super::{ApiError, AppState};
use crate::access::TokenError;
use crate::audience::Viewer;
use crate::channel::AccessMode;
use crate::metrics::ReasonLabel;

/// Session ids livegate hands out: 16 lowercase hex digits.
const SESSION_LEN: usize = 16;

/// What a request presents.
#[derive(Debug, Clone, Copy)]
pub(super) enum Credential<'a> {
    None,
    Token(&'a str),
    Session(&'a str),
}

impl<'a> Credential<'a> {
    /// From the `t`/`s` path segment and the value after it.
    pub(super) fn from_path(kind: &str, value: &'a str) -> Result<Self, ApiError> {
        match kind {
            "t" => Ok(Credential::Token(value)),
            "s" if valid_session(value) => Ok(Credential::Session(value)),
            "s" => Err(ApiError(
                StatusCode::BAD_REQUEST,
                "malformed session id".into(),
            )),
            _ => Err(super::error::not_found("path")),
        }
    }
}

fn valid_session(id: &str) -> bool {
    id.len() == SESSION_LEN && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

pub(super) fn new_session() -> String {
    hex::encode(rand::random::<[u8; SESSION_LEN / 2]>())
}

/// The client's address: the peer's, or when the peer is a trusted proxy the nearest address in
/// `X-Forwarded-For` that is not one.
pub(super) fn client_ip(
    trusted_proxies: &[ipnet::IpNet],
    peer: SocketAddr,
    headers: &HeaderMap,
) -> IpAddr {
    let trusted = |ip: &IpAddr| trusted_proxies.iter().any(|n| n.contains(ip));
    let peer_ip = peer.ip();
    if !trusted(&peer_ip) {
        return peer_ip;
    }
    let forwarded: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|a| a.trim().parse().ok())
        .collect();
    forwarded
        .iter()
        .rev()
        .find(|ip| !trusted(ip))
        .or(forwarded.first())
        .copied()
        .unwrap_or(peer_ip)
}

/// Checks that the request may play `user`'s stream and, given the publish `instance`, counts
/// its viewer. Refusals are 403 with the reason (never the token).
pub(super) async fn admit(
    state: &AppState,
    user: &str,
    instance: Option<&str>,
    credential: Credential<'_>,
    peer: SocketAddr,
    headers: &HeaderMap,
) -> Result<(), ApiError> {
    let mode = match state.channels.get(user).await {
        Ok(info) => info.access,
        Err(e) => {
            tracing::warn!(%user, error = %e, "access settings unavailable: refusing playback");
            return Err(ApiError(
                StatusCode::SERVICE_UNAVAILABLE,
                "access settings unavailable".into(),
            ));
        }
    };
    let client = client_ip(&state.trusted_proxies, peer, headers);
    let now = Instant::now();
    let viewer = match credential {
        Credential::Token(token) => {
            let claims = state
                .token_key
                .verify(token, user, chrono::Utc::now().timestamp())
                .and_then(|c| c.allows(client).map(|()| c))
                .map_err(|e| deny(state, user, e))?;
            if let (Some(vid), Some(instance)) = (&claims.vid, instance) {
                state.audience.touch(user, instance, Viewer::Id(vid), now);
                return Ok(());
            }
            Viewer::Token(token)
        }
        _ if mode == AccessMode::Token => return Err(deny(state, user, TokenError::Missing)),
        Credential::Session(id) => Viewer::Session(id),
        Credential::None => {
            let agent = headers
                .get(header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            Viewer::Client(client, agent)
        }
    };
    if let Some(instance) = instance {
        state.audience.touch(user, instance, viewer, now);
    }
    Ok(())
}

fn deny(state: &AppState, user: &str, why: TokenError) -> ApiError {
    let reason = match why {
        TokenError::Missing => "missing",
        TokenError::Malformed | TokenError::ClaimTooLong => "malformed",
        TokenError::BadSignature => "signature",
        TokenError::Expired => "expired",
        TokenError::NotYetValid => "not_yet_valid",
        TokenError::WrongStream => "wrong_stream",
        TokenError::WrongAddress => "wrong_address",
    };
    state
        .metrics
        .playback_denied
        .get_or_create(&ReasonLabel {
            reason: reason.into(),
        })
        .inc();
    tracing::debug!(%user, reason, "playback refused");
    ApiError(StatusCode::FORBIDDEN, why.to_string())
}

/// A master playlist whose variant URIs start with `prefix` (`t/<token>/`, `s/<id>/`).
pub(super) fn prefix_uris(master: &str, prefix: &str) -> String {
    let mut out = String::with_capacity(master.len() + 8 * prefix.len());
    for line in master.lines() {
        if !line.is_empty() && !line.starts_with('#') {
            out.push_str(prefix);
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_ids_are_checked_for_shape() {
        let id = new_session();
        assert!(valid_session(&id), "{id}");
        assert!(!valid_session("0123456789ABCDEF"));
        assert!(!valid_session("0123456789abcde"));
        assert!(!valid_session("../../etc/passwd"));
        assert!(Credential::from_path("s", "zz").is_err());
        assert!(Credential::from_path("x", &id).is_err());
    }

    #[test]
    fn the_client_is_the_nearest_untrusted_forwarded_address() {
        let trusted = vec![
            crate::config::parse_net("127.0.0.1").unwrap(),
            crate::config::parse_net("10.0.0.0/8").unwrap(),
        ];
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-forwarded-for",
            "203.0.113.9, 198.51.100.4, 10.1.2.3".parse().unwrap(),
        );
        let edge: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        // A client's own claim (203.0.113.9) is not believed past the first untrusted hop.
        assert_eq!(
            client_ip(&trusted, edge, &headers),
            "198.51.100.4".parse::<IpAddr>().unwrap()
        );
        let outsider: SocketAddr = "192.0.2.1:5000".parse().unwrap();
        assert_eq!(client_ip(&trusted, outsider, &headers), outsider.ip());
        assert_eq!(client_ip(&trusted, edge, &HeaderMap::new()), edge.ip());
    }

    #[test]
    fn only_variant_uris_get_the_prefix() {
        let master = "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-STREAM-INF:BANDWIDTH=1\n360p/index.m3u8\n";
        assert_eq!(
            prefix_uris(master, "s/0123456789abcdef/"),
            "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-STREAM-INF:BANDWIDTH=1\ns/0123456789abcdef/360p/index.m3u8\n"
        );
    }
}
