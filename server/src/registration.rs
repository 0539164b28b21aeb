//! Keeping this instance registered: register at once, then every interval, so a restarted
//! registry has it back within one interval; back off while the registry is away, and say so
//! once per change of state rather than once per try.

use common::wire::{Deregistration, ErrorBody, Registration};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::Duration;

/// First retry delay after a failure; it doubles up to the register interval.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// How long one registration request may take: well under any sensible interval.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// Talks to the registry's API.
pub struct Client {
    agent: ureq::Agent,
    registry: String,
    /// `Authorization` header value, when the registry wants a write token.
    authorization: Option<String>,
}

impl Client {
    /// A client of the registry at `HOST:PORT`, sending `token` with every write if given.
    pub fn new(registry: &str, token: Option<&str>) -> Client {
        let config = ureq::Agent::config_builder()
            // A renewal every few seconds needs no kept-alive connection, and each one kept
            // would hold a thread of the registry's for as long as it stays open.
            .max_idle_connections(0)
            .http_status_as_error(false)
            .user_agent(concat!("dynamic-port-server/", env!("CARGO_PKG_VERSION")))
            .build();
        Client {
            agent: config.into(),
            registry: registry.to_string(),
            authorization: token.map(|t| format!("Bearer {t}")),
        }
    }

    fn post(&self, path: &str, body: Vec<u8>, timeout: Duration) -> Result<(), String> {
        let url = format!("http://{}{path}", self.registry);
        let mut request = self
            .agent
            .post(&url)
            .config()
            .timeout_global(Some(timeout))
            .build()
            .header("Content-Type", "application/json");
        if let Some(authorization) = &self.authorization {
            request = request.header("Authorization", authorization);
        }
        let mut response = request.send(body).map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        if (200..300).contains(&status) {
            return Ok(());
        }
        let text = response.body_mut().with_config().limit(64 * 1024).read_to_string().unwrap_or_default();
        let reason = serde_json::from_str::<ErrorBody>(&text).map(|e| e.error).unwrap_or(text);
        Err(format!("the registry answered {status}: {}", reason.trim()))
    }

    /// Registers (or renews) `registration`.
    pub fn register(&self, registration: &Registration) -> Result<(), String> {
        self.post("/register", serde_json::to_vec(registration).unwrap_or_default(), REQUEST_TIMEOUT)
    }

    /// Removes `name` from the registry, giving up after `timeout`.
    pub fn deregister(&self, name: &str, timeout: Duration) -> Result<(), String> {
        let body = serde_json::to_vec(&Deregistration { name: name.into() }).unwrap_or_default();
        self.post("/deregister", body, timeout)
    }
}

/// Where the registration loop stands, for logging changes once.
#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Starting,
    Registered,
    Failing { why: String, registered_before: bool },
}

/// What a successful registration says, given where the loop stood. The first success is news,
/// also after refusals (a fresh deploy is refused until kube-proxy has programmed the
/// registry's Service); a success after a lost registration is good news, said once; a renewal
/// is routine. None of these is a warning.
fn success_line(state: &State, name: &str, registry: &str) -> (log::Level, String) {
    match state {
        State::Starting | State::Failing { registered_before: false, .. } => {
            (log::Level::Info, format!("Registered {name} with the registry at {registry}"))
        }
        State::Failing { registered_before: true, .. } => {
            (log::Level::Info, format!("Registered {name} with the registry at {registry} again"))
        }
        State::Registered => (log::Level::Debug, format!("Renewed {name}")),
    }
}

/// Registers now and every `interval` until `stop` receives or disconnects.
pub fn keep_registered(client: &Client, registration: &Registration, interval: Duration, stop: &Receiver<()>) {
    let mut state = State::Starting;
    let mut backoff = FIRST_BACKOFF;
    loop {
        let wait = match client.register(registration) {
            Ok(()) => {
                let (level, line) = success_line(&state, &registration.name, &client.registry);
                log::log!(level, "{line}");
                state = State::Registered;
                backoff = FIRST_BACKOFF;
                interval
            }
            Err(why) => {
                let registered_before = match &state {
                    State::Starting => false,
                    State::Registered => true,
                    State::Failing { registered_before, .. } => *registered_before,
                };
                let failing = State::Failing { why: why.clone(), registered_before };
                if state != failing {
                    log::warn!(
                        "Cannot register with the registry at {}: {why}; still serving, retrying every {} at most",
                        client.registry,
                        common::duration::format(interval)
                    );
                }
                state = failing;
                let wait = backoff.min(interval);
                backoff = (backoff * 2).min(interval);
                wait
            }
        };
        match stop.recv_timeout(wait) {
            Err(RecvTimeoutError::Timeout) => continue,
            Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failing(registered_before: bool) -> State {
        State::Failing { why: "connection refused".into(), registered_before }
    }

    #[test]
    fn a_first_success_after_refusals_is_news_not_a_warning_and_not_again() {
        let line = |state| success_line(&state, "web-1", "10.96.0.10:10080");
        let first = "Registered web-1 with the registry at 10.96.0.10:10080".to_string();
        assert_eq!(line(State::Starting), (log::Level::Info, first.clone()));
        assert_eq!(line(failing(false)), (log::Level::Info, first.clone()), "a fresh deploy's first success");
        assert_eq!(line(failing(true)), (log::Level::Info, format!("{first} again")), "back after losing it");
        assert_eq!(line(State::Registered), (log::Level::Debug, "Renewed web-1".to_string()));
    }
}
