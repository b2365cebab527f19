//! Small helpers shared by several concerns.

/// Shows only the first characters of a secret so logs can tell keys apart without leaking them.
pub fn redact(secret: &str) -> String {
    let visible: String = secret.chars().take(6).collect();
    if secret.chars().count() <= 6 {
        "…".to_string()
    } else {
        format!("{visible}…")
    }
}

/// User names appear in URLs and storage paths, so they are restricted to a safe alphabet.
pub fn valid_user_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
        && !name.starts_with('-')
}

/// Wall-clock milliseconds since the Unix epoch.
pub fn unix_millis() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_hides_the_tail() {
        assert_eq!(redact("lg_0123456789abcdef"), "lg_012…");
        assert_eq!(redact("short"), "…");
        assert!(!redact("lg_0123456789abcdef").contains("789"));
    }

    #[test]
    fn user_names() {
        assert!(valid_user_name("alice"));
        assert!(valid_user_name("team-7_b"));
        assert!(!valid_user_name(""));
        assert!(!valid_user_name("Alice"));
        assert!(!valid_user_name("../etc"));
        assert!(!valid_user_name("-x"));
        assert!(!valid_user_name(&"a".repeat(65)));
    }
}
