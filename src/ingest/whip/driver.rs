//! The one task that owns the WHIP UDP socket and every session's [`Rtc`](str0m::Rtc): a
//! datagram goes to the session its source address is bound to, or, for the first STUN check
//! from an address, to the session whose local ICE ufrag it names (then the address is bound).
//! str0m is sans-IO, so this loop is the only place that does IO or keeps time for it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use str0m::net::{Protocol, Receive};
use str0m::{Input, Output};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::session::{EndCause, Session};
use super::WhipError;
use crate::config::WhipConfig;
use crate::ingest::gate::{PublishGate, Refusal};
use crate::metrics::Metrics;
use crate::stream::Publisher;

/// Housekeeping cadence: timeouts, keyframe requests, stats.
const TICK: Duration = Duration::from_millis(50);
const MAX_DATAGRAM: usize = 2048;

pub enum Command {
    Add {
        session: Box<Session>,
        reply: oneshot::Sender<Result<(), WhipError>>,
    },
    Delete {
        user: String,
        id: String,
        key_hash: [u8; 32],
        reply: oneshot::Sender<Result<(), WhipError>>,
    },
    Patch {
        user: String,
        id: String,
        key_hash: [u8; 32],
        if_match: Option<String>,
        fragment: super::Fragment,
        reply: oneshot::Sender<Result<String, WhipError>>,
    },
    Admitted {
        id: String,
        result: Result<Publisher, Refusal>,
    },
}

pub struct Driver {
    pub socket: Arc<UdpSocket>,
    /// What each received datagram is reported as addressed to: str0m matches it against the
    /// candidates in the answer (a socket on 0.0.0.0 cannot tell which of them was used).
    pub candidates: Vec<SocketAddr>,
    pub config: WhipConfig,
    pub gate: PublishGate,
    pub metrics: Arc<Metrics>,
    pub live: Arc<AtomicUsize>,
    pub commands: mpsc::Receiver<Command>,
    pub commands_tx: mpsc::WeakSender<Command>,
    pub stop: CancellationToken,
}

impl Driver {
    pub async fn run(mut self) {
        let mut sessions: HashMap<String, Session> = HashMap::new();
        let mut by_ufrag: HashMap<String, String> = HashMap::new();
        let mut by_addr: HashMap<SocketAddr, String> = HashMap::new();
        let mut buf = vec![0u8; MAX_DATAGRAM];
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let next = sessions
                .values()
                .map(|s| s.next_timeout)
                .min()
                .unwrap_or_else(|| Instant::now() + TICK);
            let sleep = tokio::time::sleep_until(next.into());
            tokio::select! {
                _ = self.stop.cancelled() => break,
                received = self.socket.recv_from(&mut buf) => {
                    let (n, source) = match received {
                        Ok(r) => r,
                        Err(e) => {
                            // ICMP port unreachable from a gone client surfaces here on Linux.
                            tracing::debug!(error = %e, "WHIP UDP receive error");
                            continue;
                        }
                    };
                    let now = Instant::now();
                    let Some(id) = route(&buf[..n], source, &sessions, &by_ufrag, &by_addr) else {
                        continue;
                    };
                    let Some(session) = sessions.get_mut(&id) else { continue };
                    let destination = self.destination(source);
                    let Ok(contents) = (&buf[..n]).try_into() else { continue };
                    let input = Input::Receive(now, Receive {
                        proto: Protocol::Udp,
                        source,
                        destination,
                        contents,
                    });
                    if !session.rtc.accepts(&input) {
                        continue;
                    }
                    by_addr.insert(source, id.clone());
                    session.last_input = now;
                    if let Err(e) = session.rtc.handle_input(input) {
                        tracing::debug!(parent: &session.span, error = %e, "WebRTC input refused");
                    }
                    self.drain(session, now);
                }
                command = self.commands.recv() => {
                    let Some(command) = command else { break };
                    self.command(command, &mut sessions, &mut by_ufrag);
                }
                _ = sleep => {
                    let now = Instant::now();
                    for session in sessions.values_mut().filter(|s| s.next_timeout <= now) {
                        if let Err(e) = session.rtc.handle_input(Input::Timeout(now)) {
                            tracing::debug!(parent: &session.span, error = %e, "WebRTC timeout handling failed");
                        }
                        self.drain(session, now);
                    }
                }
                _ = tick.tick() => {
                    let now = Instant::now();
                    for session in sessions.values_mut() {
                        self.housekeep(session, now);
                        let (plis, firs) = session.keyframe_requests();
                        session.tick(now);
                        let (plis_after, firs_after) = session.keyframe_requests();
                        self.metrics.whip_keyframe_requests(plis_after - plis, firs_after - firs);
                        self.drain(session, now);
                    }
                    let ended: Vec<String> = sessions
                        .values()
                        .filter(|s| s.ended.is_some())
                        .map(|s| s.id.clone())
                        .collect();
                    for id in ended {
                        if let Some(s) = sessions.remove(&id) {
                            by_ufrag.remove(&s.local_ufrag);
                            by_addr.retain(|_, v| *v != id);
                            self.finish(s);
                        }
                    }
                }
            }
        }
        for (_, mut s) in sessions.drain() {
            s.end(EndCause::Shutdown);
            self.finish(s);
        }
    }

    fn destination(&self, source: SocketAddr) -> SocketAddr {
        self.candidates
            .iter()
            .find(|c| c.is_ipv4() == source.is_ipv4())
            .or(self.candidates.first())
            .copied()
            .unwrap_or(source)
    }

    /// Polls a session's output until it waits: datagrams out, events to the session.
    fn drain(&self, session: &mut Session, now: Instant) {
        loop {
            if !session.rtc.is_alive() {
                session.end(EndCause::IceFailed);
                session.next_timeout = now + TICK;
                return;
            }
            match session.rtc.poll_output() {
                Ok(Output::Timeout(t)) => {
                    // At least 1 ms ahead, so a deadline str0m does not advance cannot spin us.
                    let soonest = now + Duration::from_millis(1);
                    session.next_timeout = t.max(soonest).min(now + Duration::from_secs(1));
                    return;
                }
                Ok(Output::Transmit(t)) => {
                    // A full socket buffer drops the datagram, as the network may; the loop
                    // never waits on a send.
                    if let Err(e) = self.socket.try_send_to(&t.contents, t.destination) {
                        tracing::trace!(error = %e, "WHIP UDP send dropped");
                    }
                }
                Ok(Output::Event(event)) => {
                    if session.on_event(event, now) {
                        self.admit(session);
                    }
                }
                Err(e) => {
                    tracing::warn!(parent: &session.span, error = %e, "WebRTC session failed");
                    session.end(EndCause::IceFailed);
                    session.next_timeout = now + TICK;
                    return;
                }
            }
        }
    }

    /// Connected: the gate checks the key again (it may have been revoked since the offer) and
    /// publishes, taking over a live stream of the user. Only now can a WHIP attempt affect a
    /// live stream.
    fn admit(&self, session: &mut Session) {
        if session.admitting || session.publisher.is_some() {
            return;
        }
        session.admitting = true;
        let Some(key) = session.admit_key.take() else {
            session.end(EndCause::Refused);
            return;
        };
        let (gate, user, id, tx) = (
            self.gate.clone(),
            session.user.clone(),
            session.id.clone(),
            self.commands_tx.clone(),
        );
        // The gate records the user on the current span: a child without that field, so the
        // session's span does not name it twice.
        let span = tracing::info_span!(parent: &session.span, "admit");
        tokio::spawn(tracing::Instrument::instrument(
            async move {
                let result = match gate.check(&key).await {
                    Ok(u) if u == user => gate.publish(&user, ""),
                    Ok(_) => Err(Refusal::Unknown),
                    Err(r) => Err(r),
                };
                if let Some(tx) = tx.upgrade() {
                    let _ = tx.send(Command::Admitted { id, result }).await;
                }
            },
            span,
        ));
    }

    fn housekeep(&self, session: &mut Session, now: Instant) {
        let connect = Duration::from_secs(self.config.connect_timeout_secs);
        let idle = Duration::from_secs(self.config.idle_timeout_secs);
        if session.connected.is_none() && now.duration_since(session.created) > connect {
            tracing::warn!(parent: &session.span, secs = connect.as_secs(),
                "WebRTC did not connect in time (ICE or DTLS); dropping the session");
            session.end(EndCause::ConnectTimeout);
        }
        if session.connected.is_some() && now.duration_since(session.last_input) > idle {
            tracing::warn!(parent: &session.span, secs = idle.as_secs(),
                "no packet from the client (media or ICE consent); ending the session");
            session.end(EndCause::Idle);
        }
        if let Some(stream) = session.stream() {
            if stream.stop_requested() {
                let current = self
                    .gate
                    .hub()
                    .get(&session.user)
                    .is_some_and(|s| s.session_id == stream.session_id);
                session.end(if current {
                    EndCause::Stopped
                } else {
                    EndCause::TakenOver
                });
            }
        }
    }

    fn command(
        &mut self,
        command: Command,
        sessions: &mut HashMap<String, Session>,
        by_ufrag: &mut HashMap<String, String>,
    ) {
        match command {
            Command::Add { session, reply } => {
                if sessions.len() >= self.config.max_sessions {
                    let _ = reply.send(Err(WhipError::Full));
                    return;
                }
                by_ufrag.insert(session.local_ufrag.clone(), session.id.clone());
                self.live.store(sessions.len() + 1, Ordering::Relaxed);
                self.metrics.whip_sessions.inc();
                sessions.insert(session.id.clone(), *session);
                let _ = reply.send(Ok(()));
            }
            Command::Delete {
                user,
                id,
                key_hash,
                reply,
            } => {
                let result = match find(sessions, &user, &id, &key_hash) {
                    Ok(s) => {
                        tracing::info!(parent: &s.span, "WHIP session deleted by the client");
                        s.end(EndCause::Deleted);
                        Ok(())
                    }
                    Err(e) => Err(e),
                };
                let _ = reply.send(result);
            }
            Command::Patch {
                user,
                id,
                key_hash,
                if_match,
                fragment,
                reply,
            } => {
                let result = find(sessions, &user, &id, &key_hash).and_then(|s| {
                    let Some(tag) = if_match else {
                        return Err(WhipError::PreconditionRequired);
                    };
                    if tag.trim() != "*" && tag.trim() != s.etag {
                        return Err(WhipError::PreconditionFailed);
                    }
                    if fragment
                        .ufrag
                        .as_ref()
                        .is_some_and(|u| Some(u) != s.remote_ufrag.as_ref())
                    {
                        return Err(WhipError::IceRestart);
                    }
                    for c in fragment.candidates {
                        s.rtc.add_remote_candidate(c);
                    }
                    Ok(s.etag.clone())
                });
                let _ = reply.send(result);
            }
            Command::Admitted { id, result } => {
                let Some(session) = sessions.get_mut(&id) else {
                    return; // ended meanwhile: dropping the publisher ends what it started
                };
                match result {
                    Ok(publisher) if session.ended.is_none() => {
                        publisher
                            .stream()
                            .set_status("ingest", serde_json::json!({ "protocol": "whip" }));
                        session.publisher = Some(publisher);
                    }
                    Ok(_) => {}
                    Err(refusal) => {
                        tracing::warn!(parent: &session.span, reason = refusal.reason(),
                            "publish refused after connecting");
                        session.end(EndCause::Refused);
                    }
                }
            }
        }
    }

    fn finish(&self, mut session: Session) {
        let cause = session.ended.unwrap_or(EndCause::Stopped);
        session.rtc.disconnect();
        if cause.is_failure() && session.publisher.is_none() {
            self.metrics.whip_failed(cause.reason());
        }
        self.metrics.whip_ended(cause.reason());
        self.metrics.whip_sessions.dec();
        self.live.fetch_sub(1, Ordering::Relaxed);
        tracing::info!(parent: &session.span, reason = cause.reason(), "WHIP session ended");
        // Dropping the publisher ends the stream exactly as an RTMP disconnect does (unless a
        // newer session already took it over).
        drop(session.publisher.take());
    }
}

fn find<'a>(
    sessions: &'a mut HashMap<String, Session>,
    user: &str,
    id: &str,
    key_hash: &[u8; 32],
) -> Result<&'a mut Session, WhipError> {
    let s = sessions
        .get_mut(id)
        .filter(|s| s.user == user && s.ended.is_none())
        .ok_or(WhipError::NotFound)?;
    if !bool::from(subtle::ConstantTimeEq::ct_eq(
        &s.key_hash[..],
        &key_hash[..],
    )) {
        return Err(WhipError::Unauthorized(
            "the Bearer token is not the key this session was opened with".into(),
        ));
    }
    Ok(s)
}

/// The session a datagram belongs to: by source address once bound, else (a STUN check) by the
/// local ufrag in its USERNAME.
fn route(
    datagram: &[u8],
    source: SocketAddr,
    sessions: &HashMap<String, Session>,
    by_ufrag: &HashMap<String, String>,
    by_addr: &HashMap<SocketAddr, String>,
) -> Option<String> {
    // RFC 7983: STUN starts with 0..=3. A check names its session even from a bound address
    // (a client may reuse a port for a new session).
    if datagram.first().is_some_and(|b| *b < 4) {
        if let Some((local, _remote)) = str0m::ice::StunMessage::parse(datagram)
            .ok()
            .as_ref()
            .and_then(|m| m.split_username())
        {
            return by_ufrag.get(local).cloned();
        }
    }
    by_addr
        .get(&source)
        .filter(|id| sessions.contains_key(*id))
        .cloned()
}
