//! What one chat connection may send: message length, display names, and a token bucket.

use std::time::Instant;

use super::ChatError;

/// Longest message and display name, in characters.
pub const MAX_MESSAGE_CHARS: usize = 500;
pub const MAX_NAME_CHARS: usize = 32;
/// Messages a connection may send at once, then [`RATE_PER_SEC`] per second.
pub const RATE_BURST: f64 = 5.0;
pub const RATE_PER_SEC: f64 = 0.5;

/// A message's text, trimmed, or why it is refused.
pub fn check_text(text: &str) -> Result<String, ChatError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(ChatError::Invalid("empty message".into()));
    }
    if text.chars().count() > MAX_MESSAGE_CHARS {
        return Err(ChatError::Invalid(format!(
            "message too long: at most {MAX_MESSAGE_CHARS} characters"
        )));
    }
    if text.chars().any(|c| c.is_control() && c != '\n') {
        return Err(ChatError::Invalid(
            "message contains control characters".into(),
        ));
    }
    Ok(text.to_string())
}

/// A display name chosen by a viewer: trimmed, 1-32 printable characters.
pub fn check_name(name: &str) -> Result<String, ChatError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > MAX_NAME_CHARS {
        return Err(ChatError::Invalid(format!(
            "name must be 1-{MAX_NAME_CHARS} characters"
        )));
    }
    if name.chars().any(char::is_control) {
        return Err(ChatError::Invalid(
            "name contains control characters".into(),
        ));
    }
    Ok(name.to_string())
}

/// A token bucket, time injected.
#[derive(Debug, Clone)]
pub struct RateLimiter {
    tokens: f64,
    at: Instant,
}

impl RateLimiter {
    pub fn new(now: Instant) -> Self {
        RateLimiter {
            tokens: RATE_BURST,
            at: now,
        }
    }

    /// Takes one message's token, or refuses.
    pub fn take(&mut self, now: Instant) -> Result<(), ChatError> {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * RATE_PER_SEC).min(RATE_BURST);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(ChatError::RateLimited)
        }
    }
}
