//! The external publish-authorization hook (`[hooks] publish_auth_url`): after a key checks out,
//! the operator's site may still refuse the publish. One POST per publish with the user and the
//! protocol (never the key), bounded by a timeout; a failure allows or refuses as configured.

use std::time::Duration;

use crate::config::HooksConfig;
use crate::util::log_throttle::RateLimit;

/// What the hook decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    /// 401/403 from the site.
    Deny,
    /// The hook failed and the configuration says to fail closed.
    Unavailable(String),
}

#[derive(Clone)]
pub struct AuthHook {
    client: reqwest::Client,
    url: String,
    /// Scheme and host only: the path or query may carry a token.
    host: String,
    fail_open: bool,
}

impl AuthHook {
    pub fn new(config: &HooksConfig) -> Option<AuthHook> {
        if config.publish_auth_url.is_empty() {
            return None;
        }
        let client = reqwest::Client::builder()
            .timeout(Duration::from_millis(config.publish_auth_timeout_ms))
            .connect_timeout(Duration::from_millis(config.publish_auth_timeout_ms))
            .build()
            .unwrap_or_default();
        let host = reqwest::Url::parse(&config.publish_auth_url)
            .ok()
            .map(|u| format!("{}://{}", u.scheme(), u.host_str().unwrap_or("?")))
            .unwrap_or_default();
        Some(AuthHook {
            client,
            url: config.publish_auth_url.clone(),
            host,
            fail_open: config.publish_auth_fail_open,
        })
    }

    pub async fn ask(&self, user: &str, protocol: &str) -> Verdict {
        static FAILURES: std::sync::Mutex<Option<RateLimit>> = std::sync::Mutex::new(None);
        let body = serde_json::json!({ "user": user, "protocol": protocol });
        let failure = match self.client.post(&self.url).json(&body).send().await {
            Ok(r) if r.status().is_success() => return Verdict::Allow,
            Ok(r) if matches!(r.status().as_u16(), 401 | 403) => return Verdict::Deny,
            Ok(r) => format!("answered {}", r.status().as_u16()),
            Err(e) if e.is_timeout() => "timed out".to_string(),
            Err(e) => format!("failed: {e}"),
        };
        let held = FAILURES
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_or_insert_with(|| RateLimit::new(Duration::from_secs(10)))
            .check();
        if let Some(suppressed) = held {
            tracing::warn!(host = %self.host, %failure, fail_open = self.fail_open, suppressed,
                "publish authorization hook failed");
        }
        if self.fail_open {
            Verdict::Allow
        } else {
            Verdict::Unavailable(format!("publish authorization hook {failure}"))
        }
    }
}
