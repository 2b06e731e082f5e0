//! The outage state machine: abrupt drop at the outage start, failed attempts with jittered
//! back-off while it lasts, then a real reconnect and the retransmission of every unacked
//! alarm.

use super::{Gateway, Phase, Session};
use crate::link;
use crate::scenario::Source;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::time::Instant;

impl Gateway {
    pub(super) fn next_outage_wake(&self) -> Option<Instant> {
        match (&self.phase, self.outage) {
            (Phase::Up, Some((down, _))) if !self.outage_result.went_down => Some(down),
            (Phase::Down { next_attempt, .. }, _) => Some(*next_attempt),
            _ => None,
        }
    }

    /// attempts made while the outage lasts (jittered exponential back-off), then connect
    /// for real; Up again once the new session's ack subscription is granted.
    pub(super) fn outage_step(&mut self, now: Instant, session: &mut Option<Session>) {
        let Some((down_at, up_at)) = self.outage else {
            return;
        };
        match &mut self.phase {
            Phase::Up => {
                if self.outage_result.went_down || now < down_at || down_at >= self.send_until {
                    return;
                }
                self.outage_result.went_down = true;
                if let Some(s) = session.take() {
                    // Abrupt: no DISCONNECT, the socket just closes with the event loop.
                    s.poller.abort();
                    self.absorb_state(&s.link.state);
                }
                // What was in flight on the dead connection is never acked; every unacked
                // alarm goes again on the new one, and counts as delayed by the outage.
                self.counters.batches_lost += self.inflight.len() as u64;
                self.inflight.clear();
                self.bad_zero_acks_due = 0;
                for u in self.unacked.values_mut() {
                    u.source = Source::Outage;
                }
                self.phase = Phase::Down {
                    failures: 0,
                    next_attempt: now + link::backoff(1),
                };
            }
            Phase::Down {
                failures,
                next_attempt,
            } => {
                if now < *next_attempt {
                    return;
                }
                self.outage_result.attempts += 1;
                if now < up_at {
                    *failures += 1;
                    *next_attempt = now + link::backoff(*failures + 1);
                    return;
                }
                let (l, p) = link::spawn(
                    &self.plan.id,
                    &self.sched.link,
                    Arc::new(AtomicUsize::new(0)),
                );
                *session = Some(Session { link: l, poller: p });
                self.session_pubs = 0;
                self.pub_batches.clear();
                self.phase = Phase::Reconnecting;
            }
            Phase::Reconnecting => {
                let Some(s) = session.as_ref() else {
                    return;
                };
                if !s.link.state.subscribed.load(Ordering::Acquire) {
                    return;
                }
                let at = s.link.state.subscribed_at().unwrap_or(now);
                self.outage_result.reconnect_secs =
                    Some(at.saturating_duration_since(up_at).as_secs_f64());
                // The real connects after the first one were the poll task's retries.
                self.outage_result.attempts +=
                    s.link.state.connection_errors.load(Ordering::Relaxed);
                self.phase = Phase::Up;
                let keys: Vec<(u64, u32)> = self
                    .unacked
                    .iter_mut()
                    .filter(|(_, u)| !u.queued)
                    .map(|(k, u)| {
                        u.queued = true;
                        *k
                    })
                    .collect();
                self.retransmit.extend(keys);
            }
        }
    }
}
