//! Playback tokens: HS256 JSON Web Tokens that a site (or the admin API) mints with the shared
//! `access.token_secret`, naming the stream and an expiry, optionally a viewer id, a display
//! name and the client's IP address.
//!
//! The claim set (documented in README, so a site can mint tokens in any language):
//! `sub` stream (user) name, `exp` expiry (Unix seconds), optional `nbf`, `iat`, `vid` viewer id,
//! `name` display name, `ip` client address. Signature checking is jsonwebtoken's; the time
//! claims are checked here against an injected clock, so skew handling is tested without sleeps.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// Longest token accepted: a JWT with the claims above is ~300 bytes; anything near this is not
/// one of ours and is refused before any parsing.
pub const MAX_TOKEN_LEN: usize = 2048;
/// Longest viewer id and display name.
pub const MAX_CLAIM_LEN: usize = 128;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The stream (user) the token plays.
    pub sub: String,
    /// Expiry, Unix seconds.
    pub exp: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
    /// The site's id for the viewer (counts them; names them in chat).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vid: Option<String>,
    /// Display name (chat).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The only client address the token plays from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
}

/// Why a token was refused. The text is what the 403 says: short, and never the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("playback token required")]
    Missing,
    #[error("malformed token")]
    Malformed,
    #[error("bad token signature")]
    BadSignature,
    #[error("token expired")]
    Expired,
    #[error("token not yet valid")]
    NotYetValid,
    #[error("token is for another stream")]
    WrongStream,
    #[error("token is bound to another client address")]
    WrongAddress,
    #[error("token claim too long")]
    ClaimTooLong,
}

/// Signs and checks tokens with one shared secret.
#[derive(Clone)]
pub struct TokenKey {
    encoding: EncodingKey,
    decoding: DecodingKey,
    /// Seconds of clock skew allowed on `exp` and `nbf` (the site's clock against ours).
    leeway: i64,
}

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenKey")
            .field("leeway", &self.leeway)
            .finish_non_exhaustive()
    }
}

impl TokenKey {
    /// A key for `secret` (refused when jsonwebtoken refuses it, e.g. empty).
    pub fn new(secret: &[u8], leeway_secs: u64) -> Result<Self, String> {
        Ok(TokenKey {
            encoding: EncodingKey::from_secret(secret).map_err(|e| e.to_string())?,
            decoding: DecodingKey::from_secret(secret).map_err(|e| e.to_string())?,
            leeway: i64::try_from(leeway_secs).unwrap_or(i64::MAX),
        })
    }

    /// A signed token for `claims`.
    pub fn mint(&self, claims: &Claims) -> Result<String, TokenError> {
        check_lengths(claims)?;
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &self.encoding)
            .map_err(|_| TokenError::Malformed)
    }

    /// The claims of a token that is genuine, current at `now` (Unix seconds) and for `stream`.
    /// The client address is checked by [`Claims::allows`].
    pub fn verify(&self, token: &str, stream: &str, now: i64) -> Result<Claims, TokenError> {
        if token.is_empty() {
            return Err(TokenError::Missing);
        }
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::Malformed);
        }
        let mut validation = Validation::new(Algorithm::HS256);
        // Time claims are checked below against `now`; only the signature and shape here.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.required_spec_claims.clear();
        validation.validate_aud = false;
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation).map_err(
            |e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::InvalidSignature => TokenError::BadSignature,
                _ => TokenError::Malformed,
            },
        )?;
        let claims = data.claims;
        check_lengths(&claims)?;
        if now > claims.exp.saturating_add(self.leeway) {
            return Err(TokenError::Expired);
        }
        if claims
            .nbf
            .is_some_and(|nbf| now < nbf.saturating_sub(self.leeway))
        {
            return Err(TokenError::NotYetValid);
        }
        if claims.sub != stream {
            return Err(TokenError::WrongStream);
        }
        Ok(claims)
    }
}

fn check_lengths(claims: &Claims) -> Result<(), TokenError> {
    let long = |v: &Option<String>| v.as_ref().is_some_and(|s| s.len() > MAX_CLAIM_LEN);
    if claims.sub.len() > MAX_CLAIM_LEN
        || long(&claims.vid)
        || long(&claims.name)
        || long(&claims.ip)
    {
        return Err(TokenError::ClaimTooLong);
    }
    Ok(())
}

impl Claims {
    /// Whether a request from `client` may use this token (an `ip` claim binds it to one
    /// address; a claim that is not an address matches nothing).
    pub fn allows(&self, client: std::net::IpAddr) -> Result<(), TokenError> {
        match &self.ip {
            None => Ok(()),
            Some(ip) => match ip.parse::<std::net::IpAddr>() {
                Ok(bound) if canonical(bound) == canonical(client) => Ok(()),
                _ => Err(TokenError::WrongAddress),
            },
        }
    }
}

/// IPv4-mapped IPv6 addresses compare as the IPv4 address they carry.
fn canonical(ip: std::net::IpAddr) -> std::net::IpAddr {
    match ip {
        std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, std::net::IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const NOW: i64 = 1_800_000_000;

    fn key() -> TokenKey {
        TokenKey::new(b"a shared secret of the site", 30).unwrap()
    }

    fn claims(sub: &str, exp: i64) -> Claims {
        Claims {
            sub: sub.into(),
            exp,
            nbf: None,
            iat: Some(NOW),
            vid: Some("viewer-1".into()),
            name: Some("Ada".into()),
            ip: None,
        }
    }

    #[test]
    fn a_minted_token_verifies_for_its_stream_until_it_expires() {
        let token = key().mint(&claims("alice", NOW + 60)).unwrap();
        let got = key().verify(&token, "alice", NOW).unwrap();
        assert_eq!(got.vid.as_deref(), Some("viewer-1"));
        assert_eq!(got.name.as_deref(), Some("Ada"));
        // Within the leeway after expiry, then refused.
        assert!(key().verify(&token, "alice", NOW + 60 + 30).is_ok());
        assert_eq!(
            key().verify(&token, "alice", NOW + 60 + 31),
            Err(TokenError::Expired)
        );
        assert_eq!(
            key().verify(&token, "bob", NOW),
            Err(TokenError::WrongStream)
        );
    }

    #[test]
    fn not_before_allows_the_clock_skew() {
        let mut c = claims("alice", NOW + 600);
        c.nbf = Some(NOW + 100);
        let token = key().mint(&c).unwrap();
        assert_eq!(
            key().verify(&token, "alice", NOW),
            Err(TokenError::NotYetValid)
        );
        assert!(key().verify(&token, "alice", NOW + 70).is_ok());
    }

    #[test]
    fn another_secret_or_an_edited_token_is_a_bad_signature() {
        let token = key().mint(&claims("alice", NOW + 60)).unwrap();
        let other = TokenKey::new(b"someone else's secret", 30).unwrap();
        assert_eq!(
            other.verify(&token, "alice", NOW),
            Err(TokenError::BadSignature)
        );
        // The payload re-encoded for another stream, signature kept.
        let parts: Vec<&str> = token.split('.').collect();
        let forged_claims = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims("bob", NOW + 60),
            &EncodingKey::from_secret(b"x").unwrap(),
        )
        .unwrap();
        let forged_payload = forged_claims.split('.').nth(1).unwrap();
        let forged = format!("{}.{}.{}", parts[0], forged_payload, parts[2]);
        assert_eq!(
            key().verify(&forged, "bob", NOW),
            Err(TokenError::BadSignature)
        );
    }

    #[test]
    fn unsigned_and_other_algorithms_are_refused() {
        use base64_like::encode;
        let payload = encode(r#"{"sub":"alice","exp":9999999999}"#);
        for header in [
            r#"{"alg":"none","typ":"JWT"}"#,
            r#"{"alg":"HS512","typ":"JWT"}"#,
        ] {
            let token = format!("{}.{payload}.", encode(header));
            assert!(key().verify(&token, "alice", NOW).is_err(), "{header}");
        }
    }

    /// URL-safe base64 without padding, enough to build hostile tokens in tests.
    mod base64_like {
        pub fn encode(s: &str) -> String {
            const T: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
            let b = s.as_bytes();
            let mut out = String::new();
            for chunk in b.chunks(3) {
                let n = chunk
                    .iter()
                    .enumerate()
                    .fold(0u32, |n, (i, &c)| n | (u32::from(c) << (16 - 8 * i)));
                for i in 0..=chunk.len() {
                    out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
                }
            }
            out
        }
    }

    #[test]
    fn a_token_minted_by_the_readmes_python_snippet_verifies() {
        // README "Playback access": playback_token("alice", 3600, "u42", "Ada") at NOW, with
        // Python's default JSON spacing in the header.
        let token = "eyJhbGciOiAiSFMyNTYiLCAidHlwIjogIkpXVCJ9.eyJzdWIiOiJhbGljZSIsImV4cCI6MTgwMDAwMzYwMCwiaWF0IjoxODAwMDAwMDAwLCJ2aWQiOiJ1NDIiLCJuYW1lIjoiQWRhIn0.wQlavgLy5tULMx2vYMLcJsQL4LgJ7q92-bH2xQnNr6g";
        let key = TokenKey::new(b"the-site-and-livegate-share-this-secret", 30).unwrap();
        let claims = key.verify(token, "alice", NOW).unwrap();
        assert_eq!(claims.exp, NOW + 3600);
        assert_eq!(claims.vid.as_deref(), Some("u42"));
        assert_eq!(claims.name.as_deref(), Some("Ada"));
    }

    #[test]
    fn an_ip_claim_binds_the_token_to_that_address() {
        let mut c = claims("alice", NOW + 60);
        c.ip = Some("192.0.2.7".into());
        assert!(c.allows("192.0.2.7".parse().unwrap()).is_ok());
        assert!(c.allows("::ffff:192.0.2.7".parse().unwrap()).is_ok());
        assert_eq!(
            c.allows("192.0.2.8".parse().unwrap()),
            Err(TokenError::WrongAddress)
        );
        c.ip = Some("not an address".into());
        assert!(c.allows("192.0.2.7".parse().unwrap()).is_err());
        assert!(claims("alice", 0)
            .allows("192.0.2.8".parse().unwrap())
            .is_ok());
    }

    #[test]
    fn oversized_tokens_and_claims_are_refused() {
        let huge = "a".repeat(MAX_TOKEN_LEN + 1);
        assert_eq!(
            key().verify(&huge, "alice", NOW),
            Err(TokenError::Malformed)
        );
        assert_eq!(key().verify("", "alice", NOW), Err(TokenError::Missing));
        let mut c = claims("alice", NOW + 60);
        c.name = Some("n".repeat(MAX_CLAIM_LEN + 1));
        assert_eq!(key().mint(&c), Err(TokenError::ClaimTooLong));
    }

    proptest! {
        #[test]
        fn arbitrary_input_never_verifies_and_never_panics(s in ".{0,600}") {
            prop_assert!(key().verify(&s, "alice", NOW).is_err());
        }

        #[test]
        fn jwt_shaped_garbage_never_verifies(
            a in "[A-Za-z0-9_-]{0,80}", b in "[A-Za-z0-9_-]{0,200}", c in "[A-Za-z0-9_-]{0,60}"
        ) {
            let token = format!("{a}.{b}.{c}");
            prop_assert!(key().verify(&token, "alice", NOW).is_err());
        }

        #[test]
        fn expiry_is_exact_to_the_leeway(exp in NOW - 1000..NOW + 1000, now in NOW - 1000..NOW + 1000) {
            let token = key().mint(&claims("alice", exp)).unwrap();
            let got = key().verify(&token, "alice", now);
            if now > exp + 30 {
                prop_assert_eq!(got, Err(TokenError::Expired));
            } else {
                prop_assert!(got.is_ok());
            }
        }

        #[test]
        fn a_flipped_character_breaks_the_token(pos in 0usize..200, with in "[A-Za-z0-9_-]") {
            let token = key().mint(&claims("alice", NOW + 60)).unwrap();
            let pos = pos % token.len();
            let mut bytes = token.clone().into_bytes();
            if bytes[pos] == b'.' || bytes[pos] == with.as_bytes()[0] {
                return Ok(());
            }
            bytes[pos] = with.as_bytes()[0];
            let edited = String::from_utf8(bytes).unwrap();
            // The last character of a base64url part may carry unused bits: an edit there can
            // decode to the same bytes, and then the token is genuinely the same.
            if let Ok(c) = key().verify(&edited, "alice", NOW) {
                prop_assert_eq!(c, claims("alice", NOW + 60));
            }
        }
    }
}
