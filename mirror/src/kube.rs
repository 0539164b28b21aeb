//! A small client of the Kubernetes API: JSON over HTTPS with the pod's ServiceAccount token,
//! the server verified against the cluster's CA. Plain `http://` is accepted too, for
//! `kubectl proxy` and tests; the manifests never use it.

use serde_json::Value;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use ureq::tls::{Certificate, RootCerts, TlsConfig};

/// Where the API is and how to prove who we are.
#[derive(Debug, Clone)]
pub struct Config {
    /// `https://HOST:PORT` (in a pod: from KUBERNETES_SERVICE_HOST and _PORT).
    pub api: String,
    /// The ServiceAccount token; read again before each request, as projected tokens rotate.
    pub token_file: Option<PathBuf>,
    /// The cluster's CA, which the API server's certificate must chain to.
    pub ca_file: Option<PathBuf>,
}

/// An answer: status and JSON body (`Value::Null` when the body is not JSON).
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: Value,
}

impl Answer {
    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The API's own sentence for a failed call (`Status.message`), else the status code.
    pub fn message(&self) -> String {
        self.body["message"].as_str().map_or_else(|| format!("HTTP {}", self.status), str::to_string)
    }
}

pub struct Client {
    agent: ureq::Agent,
    config: Config,
}

impl Client {
    pub fn new(config: Config) -> Result<Client, String> {
        let mut builder = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(10)))
            .user_agent(concat!("dynamic-ports-mirror/", env!("CARGO_PKG_VERSION")));
        if let Some(ca) = &config.ca_file {
            let pem = std::fs::read(ca).map_err(|e| format!("cannot read the cluster CA {}: {e}", ca.display()))?;
            let cert =
                Certificate::from_pem(&pem).map_err(|e| format!("{} is not a PEM certificate: {e}", ca.display()))?;
            builder =
                builder.tls_config(TlsConfig::builder().root_certs(RootCerts::Specific(Arc::new(vec![cert]))).build());
        }
        Ok(Client { agent: builder.build().into(), config })
    }

    fn authorization(&self) -> Result<Option<String>, String> {
        let Some(path) = &self.config.token_file else { return Ok(None) };
        let token = common::token::read_file(&path.to_string_lossy())?;
        Ok(Some(format!("Bearer {token}")))
    }

    /// One call: `method` on `path` (with its query), with a JSON `body` for writes.
    pub fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Answer, String> {
        let url = format!("{}{path}", self.config.api.trim_end_matches('/'));
        let auth = self.authorization()?;
        let result = match (method, body) {
            ("GET", None) => authorized(self.agent.get(&url), &auth).call(),
            ("DELETE", None) => authorized(self.agent.delete(&url), &auth).call(),
            ("POST", Some(body)) => authorized(self.agent.post(&url), &auth)
                .header("Content-Type", "application/json")
                .send(body.to_string()),
            ("PUT", Some(body)) => authorized(self.agent.put(&url), &auth)
                .header("Content-Type", "application/json")
                .send(body.to_string()),
            _ => return Err(format!("{method} {path}: not a call this client makes")),
        };
        let mut response = result.map_err(|e| format!("{method} {url}: {e}"))?;
        let status = response.status().as_u16();
        let text = response.body_mut().with_config().limit(64 * 1024 * 1024).read_to_string().unwrap_or_default();
        Ok(Answer { status, body: serde_json::from_str(&text).unwrap_or(Value::Null) })
    }
}

/// Adds the token, when there is one, and asks for JSON.
fn authorized<B>(mut request: ureq::RequestBuilder<B>, auth: &Option<String>) -> ureq::RequestBuilder<B> {
    if let Some(value) = auth {
        request = request.header("Authorization", value);
    }
    request.header("Accept", "application/json")
}
