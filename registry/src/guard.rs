//! The mass-eviction guard. When most endpoints that were passing fail within one check
//! interval, the likelier story is that the registry lost its own network, not that the fleet
//! died at once; removing them all would empty the registry exactly when it is needed. So the
//! guard holds removals (endpoints still go critical and stay listed) until most checks pass
//! again or the hold has lasted its limit. Unlike Eureka's self-preservation, the hold always
//! ends by itself.

use common::wire::Status;
use std::time::{Duration, Instant};

/// Below this many checks of passing endpoints in a window, failures are no evidence about the
/// network: with three endpoints, two failing is not a partition.
const MIN_EVIDENCE: u32 = 10;

/// How the guard is set.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GuardConfig {
    /// Share of passing endpoints failing within one window that starts a hold; 0 disables
    /// the guard.
    pub share: f64,
    /// The longest a hold lasts.
    pub max_hold: Duration,
    /// One window: the check interval, in which every endpoint is checked once.
    pub window: Duration,
}

impl Default for GuardConfig {
    fn default() -> Self {
        GuardConfig { share: 0.5, max_hold: Duration::from_secs(120), window: Duration::from_secs(5) }
    }
}

/// What changed, for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GuardEvent {
    /// `failed` of `checked` checks of passing endpoints failed in one window.
    Hold {
        failed: u32,
        checked: u32,
    },
    /// `passing` endpoints pass again, of the `of` that were passing before the hold.
    ReleaseRecovered {
        passing: usize,
        of: usize,
    },
    ReleaseTimedOut {
        held: Duration,
    },
}

/// The guard's counts over the current window, and the hold, if any.
#[derive(Debug, Clone)]
pub struct EvictionGuard {
    config: GuardConfig,
    window_start: Instant,
    passing_checked: u32,
    passing_failed: u32,
    /// Endpoints passing when the window opened: what a hold measures recovery against.
    passing_at_start: usize,
    hold: Option<Hold>,
}

/// A hold in force: since when, and the evidence that started it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hold {
    pub since: Instant,
    /// Checks of passing endpoints that failed in the window that started the hold...
    pub failed: u32,
    /// ...of this many.
    pub checked: u32,
    /// Endpoints passing before it; the hold ends when more than half of these pass again.
    pub of: usize,
}

impl EvictionGuard {
    pub fn new(config: GuardConfig, now: Instant) -> EvictionGuard {
        EvictionGuard {
            config,
            window_start: now,
            passing_checked: 0,
            passing_failed: 0,
            passing_at_start: 0,
            hold: None,
        }
    }

    /// Counts one check result of an endpoint whose status was `before`; `passing` is how many
    /// endpoints pass now. Judging recovery by the store's count, not by the checks of one
    /// window, keeps a loaded checker that covered only some endpoints from ending a hold early.
    pub fn observe(&mut self, before: Status, passed: bool, passing: usize, now: Instant) -> Option<GuardEvent> {
        let event = self.roll(now, passing);
        if before == Status::Passing {
            self.passing_checked += 1;
            self.passing_failed += u32::from(!passed);
        }
        event
    }

    /// The hold in force at `now`, if any.
    pub fn hold(&self, now: Instant) -> Option<Hold> {
        self.hold.filter(|h| now.saturating_duration_since(h.since) < self.config.max_hold)
    }

    /// Closes the window if it has run its length and decides on the hold.
    fn roll(&mut self, now: Instant, passing: usize) -> Option<GuardEvent> {
        if now.saturating_duration_since(self.window_start) < self.config.window {
            return None;
        }
        let event = match self.hold {
            Some(hold) if passing * 2 > hold.of => Some(GuardEvent::ReleaseRecovered { passing, of: hold.of }),
            Some(hold) if now.saturating_duration_since(hold.since) >= self.config.max_hold => {
                Some(GuardEvent::ReleaseTimedOut { held: now.saturating_duration_since(hold.since) })
            }
            Some(_) => None,
            None if self.config.share > 0.0
                && self.passing_checked >= MIN_EVIDENCE
                && f64::from(self.passing_failed) > self.config.share * f64::from(self.passing_checked) =>
            {
                let (failed, checked) = (self.passing_failed, self.passing_checked);
                self.hold = Some(Hold { since: now, failed, checked, of: self.passing_at_start.max(checked as usize) });
                Some(GuardEvent::Hold { failed, checked })
            }
            None => None,
        };
        if matches!(event, Some(GuardEvent::ReleaseRecovered { .. } | GuardEvent::ReleaseTimedOut { .. })) {
            self.hold = None;
        }
        self.window_start = now;
        (self.passing_checked, self.passing_failed, self.passing_at_start) = (0, 0, passing);
        event
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: Duration = Duration::from_millis(100);

    fn guard(t0: Instant) -> EvictionGuard {
        EvictionGuard::new(GuardConfig { share: 0.5, max_hold: Duration::from_secs(1), window: WINDOW }, t0)
    }

    /// One window of `total` checks, `failing` of which fail, of endpoints whose status was
    /// `before`, with `passing` endpoints passing in the store meanwhile.
    fn round(
        g: &mut EvictionGuard,
        at: Instant,
        total: u32,
        failing: u32,
        before: Status,
        passing: usize,
    ) -> Vec<GuardEvent> {
        (0..total).filter_map(|i| g.observe(before, i >= failing, passing, at)).collect()
    }

    #[test]
    fn holds_when_most_passing_endpoints_fail_together_and_releases_when_most_pass_again() {
        let t0 = Instant::now();
        let mut g = guard(t0);
        assert!(round(&mut g, t0, 1, 0, Status::Passing, 100).is_empty());
        assert!(round(&mut g, t0 + WINDOW, 100, 60, Status::Passing, 100).is_empty());
        let events = round(&mut g, t0 + WINDOW * 2, 40, 0, Status::Passing, 40);
        assert_eq!(events, [GuardEvent::Hold { failed: 60, checked: 100 }]);
        assert_eq!(g.hold(t0 + WINDOW * 2).map(|h| h.of), Some(100));
        // A loaded checker that only got round to the live ones: 40 of 40 checks pass, but only
        // 40 of the 100 endpoints do. The hold stays.
        assert!(round(&mut g, t0 + WINDOW * 3, 40, 0, Status::Passing, 40).is_empty());
        assert!(round(&mut g, t0 + WINDOW * 4, 40, 0, Status::Passing, 50).is_empty());
        assert!(g.hold(t0 + WINDOW * 4).is_some());
        // Most of them pass again: released.
        let events = round(&mut g, t0 + WINDOW * 5, 1, 0, Status::Passing, 51);
        assert_eq!(events, [GuardEvent::ReleaseRecovered { passing: 51, of: 100 }]);
        assert!(g.hold(t0 + WINDOW * 5).is_none());
    }

    #[test]
    fn a_hold_never_outlasts_its_limit() {
        let t0 = Instant::now();
        let mut g = guard(t0);
        round(&mut g, t0, 100, 100, Status::Passing, 100);
        round(&mut g, t0 + WINDOW, 1, 1, Status::Critical, 0);
        let since = g.hold(t0 + WINDOW).expect("held").since;
        assert!(g.hold(since + Duration::from_secs(1)).is_none(), "expires by itself even with no checks");
        let events = round(&mut g, since + Duration::from_secs(1), 100, 100, Status::Critical, 0);
        assert!(matches!(events[..], [GuardEvent::ReleaseTimedOut { .. }]), "{events:?}");
        // The dead are critical now, not passing: their failures do not start a new hold.
        assert!(round(&mut g, since + Duration::from_secs(1) + WINDOW, 100, 100, Status::Critical, 0).is_empty());
        assert!(g.hold(since + Duration::from_secs(2)).is_none());
    }

    #[test]
    fn ordinary_failures_and_small_fleets_do_not_hold() {
        let t0 = Instant::now();
        for (total, failing) in [(100, 50), (100, 10), (9, 9), (3, 2)] {
            let mut g = guard(t0);
            round(&mut g, t0, total, failing, Status::Passing, total as usize);
            assert!(round(&mut g, t0 + WINDOW, 1, 0, Status::Passing, 1).is_empty(), "{failing} of {total}");
            assert!(g.hold(t0 + WINDOW).is_none());
        }
        let mut off = EvictionGuard::new(GuardConfig { share: 0.0, ..GuardConfig::default() }, t0);
        round(&mut off, t0, 100, 100, Status::Passing, 100);
        assert!(round(&mut off, t0 + Duration::from_secs(6), 1, 0, Status::Passing, 0).is_empty());
    }
}
