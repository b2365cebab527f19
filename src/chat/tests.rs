use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::limits::check_name;
use super::*;

#[test]
fn messages_reach_every_member_and_newcomers_get_the_history() {
    let chat = Chat::new();
    let mut a = chat.join("alice").unwrap();
    chat.say("alice", "s1", "Ada", " hello ").unwrap();
    chat.event("alice", "tip", serde_json::json!({"amount": 5}))
        .unwrap();
    let got = a.entries.try_recv().unwrap();
    assert!(
        matches!(got.entry.as_ref(), Entry::Message { text, name, .. } if text == "hello" && name == "Ada")
    );
    assert!(
        matches!(a.entries.try_recv().unwrap().entry.as_ref(), Entry::Event { kind, .. } if kind == "tip")
    );
    let b = chat.join("alice").unwrap();
    assert_eq!(b.history.len(), 2);
    // Other rooms see nothing.
    assert!(chat.join("bob").unwrap().history.is_empty());
}

#[test]
fn a_banned_sender_is_refused_and_their_messages_removed() {
    let chat = Chat::new();
    chat.say("alice", "troll", "T", "spam").unwrap();
    chat.say("alice", "fan", "F", "hi").unwrap();
    chat.ban("alice", "troll").unwrap();
    assert_eq!(
        chat.say("alice", "troll", "T", "more"),
        Err(ChatError::Banned)
    );
    let history = chat.join("alice").unwrap().history;
    assert_eq!(history.len(), 1);
    let id = history[0].id().unwrap();
    chat.delete("alice", id).unwrap();
    assert!(chat.join("alice").unwrap().history.is_empty());
    assert_eq!(chat.delete("alice", id), Err(ChatError::NotFound));
}

#[test]
fn limits_on_text_names_and_events() {
    assert!(check_text(&"x".repeat(MAX_MESSAGE_CHARS)).is_ok());
    assert!(check_text(&"x".repeat(MAX_MESSAGE_CHARS + 1)).is_err());
    assert!(check_text("   ").is_err());
    assert!(check_text("a\u{0}b").is_err());
    assert!(check_text("two\nlines").is_ok());
    assert!(check_name("Ada").is_ok());
    assert!(check_name("").is_err());
    assert!(check_name(&"n".repeat(MAX_NAME_CHARS + 1)).is_err());
    let chat = Chat::new();
    assert!(chat
        .event("a", "bad kind!", serde_json::Value::Null)
        .is_err());
    let big = serde_json::json!("x".repeat(MAX_EVENT_BYTES));
    assert!(chat.event("a", "tip", big).is_err());
}

#[test]
fn the_history_and_the_buffer_are_bounded_and_a_laggard_is_told() {
    let chat = Chat::new();
    let mut slow = chat.join("alice").unwrap();
    for i in 0..(ROOM_BUFFER + HISTORY) {
        chat.say("alice", &format!("s{i}"), "n", "m").unwrap();
    }
    assert_eq!(chat.join("alice").unwrap().history.len(), HISTORY);
    assert!(matches!(
        slow.entries.try_recv(),
        Err(tokio::sync::broadcast::error::TryRecvError::Lagged(_))
    ));
}

#[test]
fn the_rate_limit_allows_a_burst_then_one_every_two_seconds() {
    let t0 = Instant::now();
    let mut limit = RateLimiter::new(t0);
    for _ in 0..5 {
        limit.take(t0).unwrap();
    }
    assert_eq!(limit.take(t0), Err(ChatError::RateLimited));
    assert!(limit.take(t0 + Duration::from_millis(1900)).is_err());
    assert!(limit.take(t0 + Duration::from_millis(4100)).is_ok());
}

#[test]
fn quiet_empty_rooms_are_swept() {
    let chat = Chat::new();
    chat.say("gone", "s", "n", "m").unwrap();
    let _member = chat.join("kept").unwrap();
    chat.sweep(Duration::ZERO);
    assert_eq!(chat.rooms.lock().unwrap().len(), 1);
    assert_eq!(chat.connections(), 1);
}

proptest! {
    #[test]
    fn any_text_is_accepted_or_refused_without_panicking(text in ".{0,700}") {
        if let Ok(t) = check_text(&text) {
            prop_assert!(t.chars().count() <= MAX_MESSAGE_CHARS && !t.is_empty());
        }
    }

    #[test]
    fn ids_are_unique_and_exact_in_javascript(n in 1usize..200) {
        let chat = Chat::new();
        let mut ids = std::collections::HashSet::new();
        for _ in 0..n {
            let id = chat.next_id();
            prop_assert!(id < (1 << 53));
            prop_assert!(ids.insert(id));
        }
    }
}
