//! Where the registry's API is, for its clients (the server, the mirror): a flag's value, else
//! the Kubernetes Service `service-registry` from the environment every pod gets, else the
//! default; and `HOST:PORT` written so that an IPv6 host is an authority (`[fd00::a]:10080`).

use crate::wire::DEFAULT_API;

/// `host:port`, with brackets around an IPv6 host.
pub fn authority(host: &str, port: &str) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// The registry's API address: `given`, else `SERVICE_REGISTRY_SERVICE_HOST` and `_PORT` (the
/// Service's, in a pod), else [`DEFAULT_API`]. An error, with what was expected, unless the
/// result is `HOST:PORT`.
pub fn registry(given: Option<&str>, env: impl Fn(&str) -> Option<String>) -> Result<String, (String, &'static str)> {
    let from_service =
        || Some(authority(&env("SERVICE_REGISTRY_SERVICE_HOST")?, &env("SERVICE_REGISTRY_SERVICE_PORT")?));
    let address = given.map(str::to_string).or_else(from_service).unwrap_or_else(|| DEFAULT_API.into());
    let unbracketed_v6 = |host: &str| host.contains(':') && !(host.starts_with('[') && host.ends_with(']'));
    let bad = address
        .rsplit_once(':')
        .is_none_or(|(host, port)| host.is_empty() || unbracketed_v6(host) || port.parse::<u16>().is_err());
    if bad {
        return Err((address, "expected HOST:PORT, like 10.0.0.10:10080 or [fd00::a]:10080"));
    }
    Ok(address)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&str, &str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| vars.iter().find(|(name, _)| *name == k).map(|(_, v)| v.to_string())
    }

    #[test]
    fn a_flag_then_the_service_then_the_default() {
        let service = [("SERVICE_REGISTRY_SERVICE_HOST", "10.96.0.10"), ("SERVICE_REGISTRY_SERVICE_PORT", "10080")];
        assert_eq!(registry(Some("10.0.0.1:80"), env(&service)), Ok("10.0.0.1:80".into()));
        assert_eq!(registry(None, env(&service)), Ok("10.96.0.10:10080".into()));
        let v6 = [("SERVICE_REGISTRY_SERVICE_HOST", "fd00::a"), ("SERVICE_REGISTRY_SERVICE_PORT", "10080")];
        assert_eq!(registry(None, env(&v6)), Ok("[fd00::a]:10080".into()));
        assert_eq!(registry(None, env(&[])), Ok(DEFAULT_API.into()));
    }

    #[test]
    fn anything_but_host_port_is_refused_naming_what_was_given() {
        for bad in ["10.0.0.1", ":80", "fd00::a:80", "host:port", "host:70000"] {
            let err = registry(Some(bad), env(&[])).unwrap_err();
            assert_eq!(err.0, bad);
            assert!(err.1.contains("HOST:PORT"));
        }
        assert_eq!(registry(Some("[fd00::a]:10080"), env(&[])), Ok("[fd00::a]:10080".into()));
    }
}
