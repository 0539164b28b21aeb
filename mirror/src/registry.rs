//! The registry, followed through blocking queries: each read waits until the registry's list
//! changes (or the wait ends), so the mirror learns of a change at once and polls nothing.

use common::wire::{Endpoint, Status, INDEX_HEADER, WARMING_HEADER};
use std::time::Duration;

/// A listing as the registry answered it.
#[derive(Debug, Clone)]
pub struct Listing {
    pub index: u64,
    pub endpoints: Vec<Endpoint>,
    /// The registry restarted moments ago and its list may be incomplete.
    pub warming: bool,
}

pub struct Registry {
    agent: ureq::Agent,
    base: String,
}

impl Registry {
    /// The registry's API at `HOST:PORT`.
    pub fn new(address: &str) -> Registry {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_idle_connections(1)
            .user_agent(concat!("dynamic-ports-mirror/", env!("CARGO_PKG_VERSION")))
            .build();
        Registry { agent: agent.into(), base: format!("http://{address}") }
    }

    /// Every endpoint, once the index passes `seen` or `wait` ends (at once for `seen` 0).
    pub fn next(&self, seen: u64, wait: Duration) -> Result<Listing, String> {
        let path = format!("/endpoints?index={seen}&wait={}", common::duration::format(wait));
        let url = format!("{}{path}", self.base);
        // The registry answers up to a sixteenth of the wait late (its jitter); allow that.
        let patience = wait + wait / 16 + Duration::from_secs(5);
        let mut response = self
            .agent
            .get(&url)
            .config()
            .timeout_global(Some(patience))
            .build()
            .call()
            .map_err(|e| format!("cannot reach the registry at {}: {e}", self.base))?;
        if response.status() != 200 {
            return Err(format!("the registry answered {} to GET {path}", response.status()));
        }
        let header = |name: &str| response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
        let index = header(INDEX_HEADER).and_then(|v| v.parse().ok()).unwrap_or(0);
        let warming = header(WARMING_HEADER).is_some();
        let endpoints = response
            .body_mut()
            .with_config()
            .limit(256 * 1024 * 1024)
            .read_json::<Vec<Endpoint>>()
            .map_err(|e| format!("the registry's answer is not a listing: {e}"))?;
        Ok(Listing { index, endpoints, warming })
    }
}

/// The backends of `tag` in a listing: every endpoint with the tag, ready when passing.
pub fn backends(listing: &Listing, tag: &str) -> Vec<crate::reconcile::Backend> {
    listing
        .endpoints
        .iter()
        .filter(|e| e.tags.iter().any(|t| t == tag))
        .filter_map(|e| {
            let address: std::net::SocketAddr = e.address.parse().ok()?;
            Some(crate::reconcile::Backend {
                ip: address.ip(),
                port: address.port(),
                ready: e.status == Status::Passing,
            })
        })
        .collect()
}
