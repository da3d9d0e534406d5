//! The outbox: decisions still to be told, kept in the `GoServer`'s status.
//!
//! A decision is written into `status.outbox` by the very status write that
//! records it, with its Event not yet recorded and one pending delivery per
//! receiver. From there the controller records the Event (named by the
//! decision's id, so a second try finds it and changes nothing) and POSTs
//! to each receiver until it answers 2xx, with a backoff that is capped,
//! jittered and kept in the status, so that it goes on across restarts and
//! leader changes. What this process learnt since the last status write
//! (an Event recorded, a delivery answered) is folded in by [`settle`]; an
//! entry leaves once everything in it is told.
//!
//! Everything here is pure: the controller brings the outcomes and the
//! time.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::crd::{Delivery, Notification};

/// The receiver name of the `webhook` field.
pub const WEBHOOK: &str = "webhook";
/// Decisions kept untold at most; a newer one pushes the oldest out.
pub const LIMIT: usize = 16;
/// The first retry waits about this long; each one after twice as long.
const FIRST_RETRY: Duration = Duration::from_secs(1);
/// No retry waits longer than this.
const MAX_RETRY: Duration = Duration::from_secs(300);
/// An error kept in status is cut to this many bytes.
const ERROR_LIMIT: usize = 256;

/// A pending delivery to each of `receivers`, not tried yet.
pub fn deliveries(receivers: &[String]) -> Vec<Delivery> {
    receivers
        .iter()
        .map(|receiver| Delivery {
            receiver: receiver.clone(),
            attempts: 0,
            next_attempt_at: None,
            last_error: None,
        })
        .collect()
}

/// A delivery, named by its decision and its receiver.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    pub id: String,
    pub receiver: String,
}

/// What came of one delivery attempt.
#[derive(Clone, Debug, PartialEq)]
pub enum Attempt {
    /// The receiver answered 2xx.
    Delivered,
    /// It did not; why, when, and the jitter (in `[0, 1)`) of the wait
    /// before the next attempt.
    Failed {
        error: String,
        at: Time,
        jitter: f64,
    },
}

/// What this process learnt about one `GoServer`'s outbox since its last
/// status write.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Learnt {
    /// Decisions whose Event is recorded.
    pub recorded: HashSet<String>,
    /// The latest attempt of each delivery.
    pub attempts: HashMap<Key, Attempt>,
}

impl Learnt {
    pub fn is_empty(&self) -> bool {
        self.recorded.is_empty() && self.attempts.is_empty()
    }
}

/// The wait before attempt `attempts + 1`, after `attempts` failed ones:
/// 1 s doubling up to 5 min, of which a random half (`jitter` in `[0, 1)`)
/// is taken off, so that receivers coming back are not hit by every
/// operator at the same moment.
pub fn retry_delay(attempts: i32, jitter: f64) -> Duration {
    let exponent = u32::try_from(attempts.saturating_sub(1).clamp(0, 20)).unwrap_or(0);
    let full = FIRST_RETRY.saturating_mul(1 << exponent).min(MAX_RETRY);
    full.mul_f64(1.0 - jitter.clamp(0.0, 1.0) / 2.0)
}

/// Folds what was learnt into `outbox`: Events recorded, deliveries done
/// (gone) or failed (counted, with the next attempt's time and the error).
/// Deliveries to receivers the spec no longer has are dropped. Entries
/// with nothing left to tell leave.
pub fn settle(outbox: &mut Vec<Notification>, learnt: &Learnt, receivers: &[String]) {
    for notification in outbox.iter_mut() {
        if learnt.recorded.contains(&notification.id) {
            notification.recorded = true;
        }
        let id = notification.id.clone();
        notification.pending.retain_mut(|delivery| {
            if !receivers.contains(&delivery.receiver) {
                return false;
            }
            let key = Key {
                id: id.clone(),
                receiver: delivery.receiver.clone(),
            };
            match learnt.attempts.get(&key) {
                Some(Attempt::Delivered) => false,
                Some(Attempt::Failed { error, at, jitter }) => {
                    delivery.attempts = delivery.attempts.saturating_add(1);
                    let wait = retry_delay(delivery.attempts, *jitter);
                    delivery.next_attempt_at = Some(Time(at.0.checked_add(wait).unwrap_or(at.0)));
                    delivery.last_error = Some(cut(error));
                    true
                }
                None => true,
            }
        });
    }
    outbox.retain(|n| !n.recorded || !n.pending.is_empty());
}

fn cut(text: &str) -> String {
    if text.len() <= ERROR_LIMIT {
        return text.to_owned();
    }
    format!("{}…", &text[..text.floor_char_boundary(ERROR_LIMIT)])
}

/// The deliveries due at `now`: never tried, or whose next attempt has come.
pub fn due(outbox: &[Notification], now: &Time) -> Vec<Key> {
    outbox
        .iter()
        .flat_map(|n| {
            n.pending
                .iter()
                .filter(|d| d.next_attempt_at.as_ref().is_none_or(|t| t.0 <= now.0))
                .map(|d| Key {
                    id: n.id.clone(),
                    receiver: d.receiver.clone(),
                })
        })
        .collect()
}

/// How long until the next delivery falls due, if one waits.
pub fn next_due(outbox: &[Notification], now: &Time) -> Option<Duration> {
    outbox
        .iter()
        .flat_map(|n| &n.pending)
        .filter_map(|d| d.next_attempt_at.as_ref())
        .filter(|t| t.0 > now.0)
        .map(|t| {
            let millis = t.0.as_millisecond().saturating_sub(now.0.as_millisecond());
            Duration::from_millis(u64::try_from(millis).unwrap_or(0))
        })
        .min()
}

#[cfg(test)]
mod tests {
    use k8s_openapi::jiff::Timestamp;
    use pretty_assertions::assert_eq;

    use super::*;
    use crate::crd::DecisionKind;

    fn at(seconds: i64) -> Time {
        Time(Timestamp::from_second(seconds).unwrap())
    }

    fn notification(id: &str, receivers: &[&str]) -> Notification {
        let receivers: Vec<String> = receivers.iter().map(|r| (*r).to_owned()).collect();
        Notification {
            id: id.to_owned(),
            event: DecisionKind::RolledBack,
            revision: "web-1".to_owned(),
            previous_good_revision: None,
            message: "m".to_owned(),
            decided_at: at(0),
            measurements: Vec::new(),
            recorded: false,
            pending: deliveries(&receivers),
        }
    }

    fn key(id: &str, receiver: &str) -> Key {
        Key {
            id: id.to_owned(),
            receiver: receiver.to_owned(),
        }
    }

    #[test]
    fn the_wait_doubles_up_to_five_minutes_less_its_jitter() {
        assert_eq!(retry_delay(1, 0.0), Duration::from_secs(1));
        assert_eq!(retry_delay(2, 0.0), Duration::from_secs(2));
        assert_eq!(retry_delay(4, 0.0), Duration::from_secs(8));
        assert_eq!(retry_delay(9, 0.0), Duration::from_secs(256));
        assert_eq!(retry_delay(10, 0.0), MAX_RETRY);
        assert_eq!(retry_delay(i32::MAX, 0.0), MAX_RETRY);
        assert_eq!(retry_delay(4, 0.5), Duration::from_secs(6));
    }

    #[test]
    fn an_entry_leaves_once_its_event_and_every_receiver_are_told() {
        let receivers = vec!["webhook".to_owned(), "ci".to_owned()];
        let mut outbox = vec![notification("d1", &["webhook", "ci"])];
        assert_eq!(
            due(&outbox, &at(0)),
            [key("d1", "webhook"), key("d1", "ci")]
        );

        // The Event is recorded and `ci` answers; `webhook` fails.
        let mut learnt = Learnt::default();
        learnt.recorded.insert("d1".to_owned());
        learnt.attempts.insert(key("d1", "ci"), Attempt::Delivered);
        learnt.attempts.insert(
            key("d1", "webhook"),
            Attempt::Failed {
                error: "the receiver answered 503".to_owned(),
                at: at(10),
                jitter: 0.0,
            },
        );
        settle(&mut outbox, &learnt, &receivers);
        assert_eq!(outbox.len(), 1);
        assert!(outbox[0].recorded);
        let pending = &outbox[0].pending;
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].receiver, "webhook");
        assert_eq!(pending[0].attempts, 1);
        assert_eq!(pending[0].next_attempt_at, Some(at(11)));
        assert_eq!(
            pending[0].last_error.as_deref(),
            Some("the receiver answered 503")
        );
        assert!(due(&outbox, &at(10)).is_empty());
        assert_eq!(next_due(&outbox, &at(10)), Some(Duration::from_secs(1)));
        assert_eq!(due(&outbox, &at(11)), [key("d1", "webhook")]);

        // A second failure waits twice as long; then it answers.
        let mut learnt = Learnt::default();
        learnt.attempts.insert(
            key("d1", "webhook"),
            Attempt::Failed {
                error: "connection refused".to_owned(),
                at: at(11),
                jitter: 0.0,
            },
        );
        settle(&mut outbox, &learnt, &receivers);
        assert_eq!(outbox[0].pending[0].next_attempt_at, Some(at(13)));
        let mut learnt = Learnt::default();
        learnt
            .attempts
            .insert(key("d1", "webhook"), Attempt::Delivered);
        settle(&mut outbox, &learnt, &receivers);
        assert!(outbox.is_empty());
    }

    #[test]
    fn deliveries_to_receivers_taken_out_of_the_spec_are_dropped() {
        let mut outbox = vec![notification("d1", &["webhook", "ci"])];
        settle(&mut outbox, &Learnt::default(), &["ci".to_owned()]);
        assert_eq!(outbox[0].pending.len(), 1);
        assert_eq!(outbox[0].pending[0].receiver, "ci");
        // Nothing learnt, the Event not recorded: the entry stays.
        let mut outbox = vec![notification("d2", &[])];
        settle(&mut outbox, &Learnt::default(), &[]);
        assert_eq!(outbox.len(), 1);
        let mut learnt = Learnt::default();
        learnt.recorded.insert("d2".to_owned());
        settle(&mut outbox, &learnt, &[]);
        assert!(outbox.is_empty());
    }

    #[test]
    fn a_long_error_is_cut() {
        let mut outbox = vec![notification("d1", &["webhook"])];
        let mut learnt = Learnt::default();
        learnt.attempts.insert(
            key("d1", "webhook"),
            Attempt::Failed {
                error: "é".repeat(400),
                at: at(1),
                jitter: 0.0,
            },
        );
        settle(&mut outbox, &learnt, &["webhook".to_owned()]);
        let error = outbox[0].pending[0].last_error.clone().unwrap();
        assert!(
            error.len() <= ERROR_LIMIT + '…'.len_utf8(),
            "{}",
            error.len()
        );
    }
}
