//! The mass-eviction guard. When most endpoints that were passing fail within one check
//! interval, the likelier story is that the registry lost its own network, not that the fleet
//! died at once; removing them all would empty the registry exactly when it is needed. So the
//! guard holds removals (endpoints still go critical and stay listed) until most checks pass
//! again or the hold has lasted its limit. Unlike Eureka's self-preservation, the hold always
//! ends by itself.

use crate::wire::Status;
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
    Hold { failed: u32, of: u32 },
    ReleaseRecovered { passed: u32, of: u32 },
    ReleaseTimedOut { held: Duration },
}

/// The guard's counts over the current window, and the hold, if any.
#[derive(Debug, Clone)]
pub struct EvictionGuard {
    config: GuardConfig,
    window_start: Instant,
    passing_checked: u32,
    passing_failed: u32,
    checked: u32,
    passed: u32,
    hold: Option<Hold>,
}

/// A hold in force: since when, and the evidence that started it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hold {
    pub since: Instant,
    pub failed: u32,
    pub of: u32,
}

impl EvictionGuard {
    pub fn new(config: GuardConfig, now: Instant) -> EvictionGuard {
        EvictionGuard {
            config,
            window_start: now,
            passing_checked: 0,
            passing_failed: 0,
            checked: 0,
            passed: 0,
            hold: None,
        }
    }

    /// Counts one check result of an endpoint whose status was `before`.
    pub fn observe(&mut self, before: Status, passed: bool, now: Instant) -> Option<GuardEvent> {
        let event = self.roll(now);
        self.checked += 1;
        self.passed += u32::from(passed);
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
    fn roll(&mut self, now: Instant) -> Option<GuardEvent> {
        if now.saturating_duration_since(self.window_start) < self.config.window {
            return None;
        }
        let event = match self.hold {
            Some(_) if self.checked > 0 && self.passed * 2 > self.checked => {
                Some(GuardEvent::ReleaseRecovered { passed: self.passed, of: self.checked })
            }
            Some(hold) if now.saturating_duration_since(hold.since) >= self.config.max_hold => {
                Some(GuardEvent::ReleaseTimedOut { held: now.saturating_duration_since(hold.since) })
            }
            Some(_) => None,
            None if self.config.share > 0.0
                && self.passing_checked >= MIN_EVIDENCE
                && f64::from(self.passing_failed) > self.config.share * f64::from(self.passing_checked) =>
            {
                self.hold = Some(Hold { since: now, failed: self.passing_failed, of: self.passing_checked });
                Some(GuardEvent::Hold { failed: self.passing_failed, of: self.passing_checked })
            }
            None => None,
        };
        if matches!(event, Some(GuardEvent::ReleaseRecovered { .. } | GuardEvent::ReleaseTimedOut { .. })) {
            self.hold = None;
        }
        self.window_start = now;
        (self.passing_checked, self.passing_failed, self.checked, self.passed) = (0, 0, 0, 0);
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

    /// One window of `total` checks of passing endpoints, `failing` of which fail.
    fn round(g: &mut EvictionGuard, at: Instant, total: u32, failing: u32, before: Status) -> Vec<GuardEvent> {
        (0..total).filter_map(|i| g.observe(before, i >= failing, at)).collect()
    }

    #[test]
    fn holds_when_most_passing_endpoints_fail_together_and_releases_when_they_pass() {
        let t0 = Instant::now();
        let mut g = guard(t0);
        assert!(round(&mut g, t0, 100, 60, Status::Passing).is_empty());
        let events = round(&mut g, t0 + WINDOW, 100, 60, Status::Critical);
        assert_eq!(events, [GuardEvent::Hold { failed: 60, of: 100 }]);
        assert!(g.hold(t0 + WINDOW).is_some());
        // Still mostly failing: the hold stays.
        assert!(round(&mut g, t0 + WINDOW * 2, 100, 60, Status::Critical).is_empty());
        assert!(round(&mut g, t0 + WINDOW * 3, 100, 0, Status::Critical).is_empty());
        assert!(g.hold(t0 + WINDOW * 3).is_some());
        // The window in which most passed again closes: released.
        let events = round(&mut g, t0 + WINDOW * 4, 1, 0, Status::Passing);
        assert!(matches!(events[..], [GuardEvent::ReleaseRecovered { passed: 100, of: 100 }]), "{events:?}");
        assert!(g.hold(t0 + WINDOW * 4).is_none());
    }

    #[test]
    fn a_hold_never_outlasts_its_limit() {
        let t0 = Instant::now();
        let mut g = guard(t0);
        round(&mut g, t0, 100, 100, Status::Passing);
        round(&mut g, t0 + WINDOW, 100, 100, Status::Critical);
        let since = g.hold(t0 + WINDOW).expect("held").since;
        assert!(g.hold(since + Duration::from_secs(1)).is_none(), "expires by itself even with no checks");
        let events = round(&mut g, since + Duration::from_secs(1), 100, 100, Status::Critical);
        assert!(matches!(events[..], [GuardEvent::ReleaseTimedOut { .. }]), "{events:?}");
        // The dead are critical now, not passing: their failures do not start a new hold.
        assert!(round(&mut g, since + Duration::from_secs(1) + WINDOW, 100, 100, Status::Critical).is_empty());
        assert!(g.hold(since + Duration::from_secs(2)).is_none());
    }

    #[test]
    fn ordinary_failures_and_small_fleets_do_not_hold() {
        let t0 = Instant::now();
        for (total, failing) in [(100, 50), (100, 10), (9, 9), (3, 2)] {
            let mut g = guard(t0);
            round(&mut g, t0, total, failing, Status::Passing);
            assert!(round(&mut g, t0 + WINDOW, 1, 0, Status::Passing).is_empty(), "{failing} of {total}");
            assert!(g.hold(t0 + WINDOW).is_none());
        }
        let mut off = EvictionGuard::new(GuardConfig { share: 0.0, ..GuardConfig::default() }, t0);
        round(&mut off, t0, 100, 100, Status::Passing);
        assert!(round(&mut off, t0 + Duration::from_secs(6), 1, 0, Status::Passing).is_empty());
    }
}
