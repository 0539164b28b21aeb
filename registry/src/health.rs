//! The health state machine: what one check result does to an endpoint's status. Pure, so
//! every rule is a row in a table test; the store applies it and the checker reports to it.

use common::probe::Outcome;
use common::wire::Status;
use std::time::{Duration, Instant};

/// The thresholds the contract names, set by flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thresholds {
    /// Failures in a row that turn a passing endpoint critical (`-failures-before-critical`).
    pub failures_before_critical: u32,
    /// How long an endpoint may stay critical before it is removed (`-deregister-critical-after`).
    pub deregister_critical_after: Duration,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds { failures_before_critical: 2, deregister_critical_after: Duration::from_secs(30) }
    }
}

/// An endpoint's health between checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    pub status: Status,
    pub consecutive_failures: u32,
    pub last_error: Option<String>,
    /// When it went critical; removal counts from here.
    pub critical_since: Option<Instant>,
}

impl Health {
    /// A newly registered endpoint, not yet checked.
    #[cfg(test)]
    pub fn pending() -> Health {
        Health { status: Status::Pending, consecutive_failures: 0, last_error: None, critical_since: None }
    }

    /// Applies one check result. One pass makes any endpoint passing. A failure makes a
    /// passing endpoint critical only after `failures_before_critical` in a row, so one lost
    /// packet does not take it out of rotation; an endpoint that has never passed goes critical
    /// at its first failure, since it has never shown it can serve. An answer from another
    /// instance is proof, not doubt: critical at once, whatever the threshold.
    pub fn after(&self, outcome: &Outcome, thresholds: &Thresholds, now: Instant) -> Health {
        let Some(why) = outcome.error() else {
            return Health { status: Status::Passing, consecutive_failures: 0, last_error: None, critical_since: None };
        };
        let failures = self.consecutive_failures.saturating_add(1);
        let critical = match self.status {
            _ if matches!(outcome, Outcome::Taken(_)) => true,
            Status::Pending | Status::Critical => true,
            Status::Passing => failures >= thresholds.failures_before_critical.max(1),
        };
        Health {
            status: if critical { Status::Critical } else { Status::Passing },
            consecutive_failures: failures,
            last_error: Some(why),
            critical_since: if critical { self.critical_since.or(Some(now)) } else { None },
        }
    }

    /// Whether the endpoint has been critical long enough to be removed.
    pub fn expired(&self, thresholds: &Thresholds, now: Instant) -> bool {
        self.critical_since
            .is_some_and(|since| now.saturating_duration_since(since) >= thresholds.deregister_critical_after)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Status::*;

    fn fail() -> Outcome {
        Outcome::Fail("connection refused".into())
    }

    fn taken() -> Outcome {
        Outcome::Taken("web-2".into())
    }

    #[test]
    fn transitions_follow_the_contract() {
        let t = Thresholds { failures_before_critical: 2, deregister_critical_after: Duration::from_secs(30) };
        let now = Instant::now();
        // (status before, failures before, outcome, status after, failures after)
        let table = [
            (Pending, 0, Outcome::Pass, Passing, 0),
            (Pending, 0, fail(), Critical, 1),
            (Passing, 0, Outcome::Pass, Passing, 0),
            (Passing, 0, fail(), Passing, 1),
            (Passing, 1, fail(), Critical, 2),
            (Critical, 2, fail(), Critical, 3),
            (Critical, 7, Outcome::Pass, Passing, 0),
            // Another instance answered: critical at once, from any status.
            (Passing, 0, taken(), Critical, 1),
            (Pending, 0, taken(), Critical, 1),
            (Critical, 3, taken(), Critical, 4),
        ];
        for (before, failures, outcome, want, want_failures) in table {
            let h = Health { status: before, consecutive_failures: failures, last_error: None, critical_since: None };
            let next = h.after(&outcome, &t, now);
            assert_eq!(
                (next.status, next.consecutive_failures),
                (want, want_failures),
                "{before:?} {failures} {outcome:?}"
            );
            assert_eq!(next.last_error.is_some(), outcome != Outcome::Pass);
            assert_eq!(next.critical_since.is_some(), want == Critical);
        }
    }

    #[test]
    fn a_threshold_of_one_makes_the_first_failure_critical() {
        let t = Thresholds { failures_before_critical: 1, ..Thresholds::default() };
        let passing = Health { status: Passing, ..Health::pending() };
        assert_eq!(passing.after(&fail(), &t, Instant::now()).status, Critical);
    }

    #[test]
    fn removal_counts_from_the_first_critical_moment() {
        let t = Thresholds { failures_before_critical: 2, deregister_critical_after: Duration::from_secs(30) };
        let start = Instant::now();
        let critical = Health::pending().after(&fail(), &t, start);
        let later = critical.after(&fail(), &t, start + Duration::from_secs(20));
        assert_eq!(later.critical_since, Some(start), "a second failure must not restart the clock");
        assert!(!later.expired(&t, start + Duration::from_secs(29)));
        assert!(later.expired(&t, start + Duration::from_secs(30)));
        let healed = later.after(&Outcome::Pass, &t, start + Duration::from_secs(31));
        assert!(!healed.expired(&t, start + Duration::from_secs(99)));
    }
}
