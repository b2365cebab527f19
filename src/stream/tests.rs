use super::*;
use crate::media::Packet;
use bytes::Bytes;

fn video(dts: i64, key: bool) -> MediaEvent {
    MediaEvent::Packet(Packet {
        track: TrackKind::Video,
        dts,
        pts: dts,
        keyframe: key,
        data: Bytes::from_static(&[0, 0, 0, 1, 0x65]),
    })
}

fn config() -> MediaEvent {
    MediaEvent::VideoConfig(Arc::new(
        VideoConfig::h264(crate::media::avc::tests::AVCC_640X360_HIGH).unwrap(),
    ))
}

#[tokio::test]
async fn late_joiner_starts_at_keyframe_with_config() {
    let hub = Hub::new();
    let publisher = hub.publish("alice");
    publisher.push(config(), 10);
    publisher.push(video(0, true), 10);
    publisher.push(video(3000, false), 10);
    publisher.push(video(6000, true), 10);
    publisher.push(video(9000, false), 10);
    let mut sub = hub.get("alice").unwrap().subscribe();
    assert!(matches!(sub.recv().await, Some(MediaEvent::VideoConfig(_))));
    assert_eq!(sub.recv().await, Some(video(6000, true)));
    assert_eq!(sub.recv().await, Some(video(9000, false)));
    drop(publisher);
    assert_eq!(sub.recv().await, Some(MediaEvent::End(EndReason::Stopped)));
    assert_eq!(sub.recv().await, None);
    assert!(hub.get("alice").is_none());
}

#[tokio::test]
async fn slow_consumer_skips_without_blocking_others() {
    let hub = Hub::new();
    let publisher = hub.publish("bob");
    let stream = hub.get("bob").unwrap();
    let mut slow = stream.subscribe();
    let mut fast = stream.subscribe();
    publisher.push(config(), 10);
    let total = RING_CAPACITY as i64 * 3;
    for i in 0..total {
        publisher.push(video(i * 3000, i % 30 == 0), 10);
        // The fast one keeps up.
        loop {
            match fast.recv().await {
                Some(MediaEvent::Packet(p)) => {
                    assert_eq!(p.dts, i * 3000);
                    break;
                }
                Some(_) => continue,
                None => panic!("ended early"),
            }
        }
    }
    // The slow one lagged, resynchronises on a keyframe with the config first.
    assert!(matches!(
        slow.recv().await,
        Some(MediaEvent::VideoConfig(_))
    ));
    match slow.recv().await {
        Some(MediaEvent::Packet(p)) => assert!(p.keyframe, "{p:?}"),
        other => panic!("{other:?}"),
    }
    assert!(stream.summary().consumer_lag_drops > 0);
}

#[tokio::test]
async fn takeover_ends_the_old_session() {
    let hub = Hub::new();
    let first = hub.publish("carol");
    let old = hub.get("carol").unwrap();
    let mut old_sub = old.subscribe();
    let second = hub.publish("carol");
    assert_eq!(
        old_sub.recv().await,
        Some(MediaEvent::End(EndReason::Replaced))
    );
    // The old connection is told to stop.
    tokio::time::timeout(Duration::from_secs(1), old.stopped())
        .await
        .unwrap();
    // Dropping the old publisher does not remove the new session.
    drop(first);
    assert_eq!(
        hub.get("carol").unwrap().session_id,
        second.stream().session_id
    );
    drop(second);
    assert!(hub.get("carol").is_none());
}

#[tokio::test]
async fn renditions_are_fanned_out_like_the_source() {
    let hub = Hub::new();
    let publisher = hub.publish("erin");
    let stream = publisher.stream().clone();
    let waiter = tokio::spawn({
        let stream = stream.clone();
        async move { stream.renditions().await }
    });
    let rung = stream.publish_rendition("360p");
    stream.plan_renditions(vec![RenditionInfo {
        name: "360p".into(),
        width: 640,
        height: 360,
    }]);
    let plan = waiter.await.unwrap().unwrap();
    assert_eq!(plan[0].name, "360p");
    rung.push(config(), 0);
    rung.push(video(0, true), 0);
    let mut sub = stream.rendition("360p").unwrap().subscribe();
    assert!(matches!(sub.recv().await, Some(MediaEvent::VideoConfig(_))));
    assert_eq!(sub.recv().await, Some(video(0, true)));
    assert!(
        hub.get("erin/360p").is_none(),
        "renditions are not listed as streams"
    );
    drop(rung);
    assert_eq!(sub.recv().await, Some(MediaEvent::End(EndReason::Stopped)));
}

#[tokio::test]
async fn a_stream_ending_unplanned_releases_waiters() {
    let hub = Hub::new();
    let publisher = hub.publish("frank");
    let stream = publisher.stream().clone();
    drop(publisher);
    assert_eq!(stream.renditions().await, None);
}

#[test]
fn listeners_see_new_streams_first() {
    let hub = Hub::new();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    hub.on_new_stream(move |stream| s.lock().unwrap().push(stream.name.clone()));
    let _p = hub.publish("dave");
    assert_eq!(*seen.lock().unwrap(), vec!["dave".to_string()]);
}

#[tokio::test]
async fn a_late_subscriber_to_an_ended_rendition_sees_the_end_and_nothing_more() {
    let hub = Hub::new();
    let publisher = hub.publish("gina");
    let stream = publisher.stream().clone();
    let rung = stream.publish_rendition("360p");
    rung.push(config(), 0);
    rung.push(video(0, true), 0);
    // The ladder ends the rung with an End event while still holding its publisher.
    rung.push(MediaEvent::End(EndReason::Stopped), 0);
    let mut late = stream.rendition("360p").unwrap().subscribe();
    let mut seen = Vec::new();
    let all = tokio::time::timeout(Duration::from_secs(2), async {
        while let Some(e) = late.recv().await {
            seen.push(e);
        }
    })
    .await;
    assert!(all.is_ok(), "the subscription ends: {seen:?}");
    assert_eq!(seen.last(), Some(&MediaEvent::End(EndReason::Stopped)));
    assert!(
        !seen.iter().any(|e| matches!(e, MediaEvent::Packet(_))),
        "no replay of the ended GOP: {seen:?}"
    );
    drop(rung);
}

#[test]
fn abort_ends_the_session_with_a_reason() {
    let hub = Hub::new();
    let publisher = hub.publish("hal");
    let stream = publisher.stream().clone();
    assert_eq!(stream.abort_reason(), None);
    stream.abort("HEVC cannot be served");
    assert_eq!(
        stream.abort_reason().as_deref(),
        Some("HEVC cannot be served")
    );
    assert!(stream.summary().consumer_status.contains_key("error"));
}

fn audio(dts: i64, len: usize) -> MediaEvent {
    MediaEvent::Packet(Packet {
        track: TrackKind::Audio,
        dts,
        pts: dts,
        keyframe: true,
        data: Bytes::from(vec![0u8; len]),
    })
}

#[test]
fn a_message_flood_ends_the_session_with_a_reason() {
    let hub = Hub::with_limits(HubLimits {
        max_messages_per_sec: 500,
        ..HubLimits::default()
    });
    let publisher = hub.publish("flood");
    let stream = publisher.stream().clone();
    // 1-byte frames as fast as possible: far above 500 a second over the 2 s minimum span.
    for i in 0..5000 {
        publisher.push(audio(i, 1), 3);
    }
    let reason = stream.abort_reason().expect("the flood ended the session");
    assert!(reason.contains("max_messages_per_sec"), "{reason}");
    // Media is no longer forwarded once over the rate.
    let mut sub = stream.subscribe();
    publisher.push(audio(6000, 1), 3);
    let rx = sub.rx.as_mut().expect("ring open");
    assert!(rx.try_recv().is_err());
}

#[test]
fn a_normal_rate_is_not_a_flood() {
    let hub = Hub::new();
    let publisher = hub.publish("calm");
    // A GOP sent at once at the start (as OBS does after connecting) is not a flood.
    for i in 0..600 {
        publisher.push(audio(i, 10), 12);
    }
    assert_eq!(publisher.stream().abort_reason(), None);
}

#[test]
fn the_ring_holds_at_most_its_byte_budget_and_drops_whole_gops() {
    let hub = Hub::with_limits(HubLimits {
        ring_max_bytes: 1 << 20,
        ..HubLimits::default()
    });
    let publisher = hub.publish("big");
    let stream = publisher.stream().clone();
    let big = |dts: i64, key: bool| {
        MediaEvent::Packet(Packet {
            track: TrackKind::Video,
            dts,
            pts: dts,
            keyframe: key,
            data: Bytes::from(vec![0u8; 100 << 10]),
        })
    };
    publisher.push(config(), 10);
    for i in 0..100 {
        publisher.push(big(i, i % 10 == 0), 10);
        let f = lock(&stream.fanout);
        assert!(f.ring_bytes <= (1 << 20) + (1 << 18), "{}", f.ring_bytes);
    }
    assert!(stream.summary().consumer_lag_drops > 0);
    // What a subscriber still gets starts at a keyframe after the drop.
    let f = lock(&stream.fanout);
    assert!(f.ring_dropping || f.ring_bytes <= 1 << 20);
}

#[tokio::test]
async fn how_each_session_ended_is_known_to_whoever_waits() {
    let hub = Hub::new();
    let first = hub.publish("alice");
    let stream = first.stream().clone();
    assert_eq!(stream.replaced_session, None);
    let waiter = tokio::spawn({
        let stream = stream.clone();
        async move { stream.ended().await }
    });
    // A newer publish takes over: the old session ends as replaced, the new one knows whom.
    let second = hub.publish("alice");
    assert_eq!(second.stream().replaced_session, Some(stream.session_id));
    assert_eq!(waiter.await.unwrap(), EndReason::Replaced);
    assert_eq!(stream.end_cause(), SessionEnd::Takeover);
    drop(first);

    let revoked = second.stream().clone();
    assert!(hub.stop("alice", StopCause::Revoked));
    // A later cause does not overwrite the first.
    revoked.stop_session(StopCause::Shutdown);
    drop(second);
    assert_eq!(revoked.ended().await, EndReason::Stopped);
    assert_eq!(revoked.end_cause(), SessionEnd::Revoked);

    // An ended session is not "replaced" by the next one.
    let third = hub.publish("alice");
    assert_eq!(third.stream().replaced_session, None);
    assert_eq!(third.stream().end_cause(), SessionEnd::Publisher);
    third.stream().abort("too many messages");
    assert_eq!(third.stream().end_cause(), SessionEnd::Error);
}
