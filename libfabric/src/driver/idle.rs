//! When a queue has gone idle: readers in waiting mode spin for a while after
//! the last completion or post, then sleep.
//!
//! Activity is a counter that completions and posts bump, not a time: a
//! clock read costs as much as the rest of a poll, and would be paid on
//! every operation. Each reader keeps its own [`Idle`]: the count it last
//! saw, and when it first saw it. Only a reader that finds nothing to read
//! looks at the clock.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Completions and posts on one queue, counted.
#[derive(Debug, Default)]
pub(crate) struct Activity(AtomicU64);

impl Activity {
    /// Notes a completion, or a post whose completion may be near.
    pub(crate) fn bump(&self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }

    pub(crate) fn count(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// One reader's view of an [`Activity`].
#[derive(Debug, Default)]
pub(crate) struct Idle {
    seen: u64,
    /// When `seen` was first seen; `None` until a check needs it.
    since: Option<Instant>,
    /// Idle as of `seen`, as another reader found (see [`expire`](Self::expire)).
    expired: bool,
}

impl Idle {
    /// Whether nothing happened on the queue for `spin`, counted from the
    /// first check that saw the current count.
    pub(crate) fn check(&mut self, activity: &Activity, spin: Duration) -> bool {
        self.check_at(activity, spin, Instant::now())
    }

    /// [`check`](Self::check), with the time already read.
    pub(crate) fn check_at(&mut self, activity: &Activity, spin: Duration, now: Instant) -> bool {
        let count = activity.count();
        if count != self.seen || (self.since.is_none() && !self.expired) {
            self.seen = count;
            self.since = Some(now);
            self.expired = false;
            return false;
        }
        self.expired || self.since.is_some_and(|since| now.saturating_duration_since(since) >= spin)
    }

    /// Takes over another reader's finding that the queue is idle: the next
    /// check says idle, unless something happens before it.
    pub(crate) fn expire(&mut self, activity: &Activity) {
        self.seen = activity.count();
        self.expired = true;
    }

    /// Whether something happened since the last check.
    pub(crate) fn moved(&self, activity: &Activity) -> bool {
        activity.count() != self.seen
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_only_after_the_spin_without_activity() {
        let activity = Activity::default();
        let mut idle = Idle::default();
        let spin = Duration::from_millis(20);
        assert!(!idle.check(&activity, spin), "the first check starts the clock");
        assert!(!idle.check(&activity, spin));
        std::thread::sleep(spin);
        assert!(idle.check(&activity, spin));
        activity.bump();
        assert!(idle.moved(&activity));
        assert!(!idle.check(&activity, spin), "activity restarts the clock");
        assert!(!idle.moved(&activity));
    }

    #[test]
    fn an_expired_view_is_idle_until_something_happens() {
        let activity = Activity::default();
        let mut idle = Idle::default();
        let spin = Duration::from_secs(60);
        idle.expire(&activity);
        assert!(idle.check(&activity, spin));
        assert!(idle.check(&activity, spin));
        activity.bump();
        assert!(!idle.check(&activity, spin));
        assert!(!idle.check(&activity, spin), "the clock runs again from the activity");
    }
}
