//! The wire format shared by the registry and the server, so the two cannot drift: the seed's
//! `POST /register` body, the deregistration body, and the record the registry serves.

use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use std::fmt;

/// Where the registry's API listens by default, and where its clients (`watch`, the server)
/// look for it.
pub const DEFAULT_API: &str = "127.0.0.1:10080";

/// The header on every read of the registry: the watch index the answer reflects (for
/// blocking queries: `?index=` waits until it passes this).
pub const INDEX_HEADER: &str = "X-Registry-Index";
/// The header on a listing taken while the registry warms up after a start: the list may be
/// incomplete, and this is how much of the warm-up is left.
pub const WARMING_HEADER: &str = "X-Registry-Warming";

/// The header `dynamic-port-server` names itself in on every answer, so that a health check
/// can tell the instance it registered from a stranger that took its port since.
pub const INSTANCE_HEADER: &str = "X-Instance-Name";

/// What an instance sends to `POST /register`: the seed's `{Name, Address, Tags}`, and an
/// optional `TTL`: a lease that ends the record unless it is registered again in time.
///
/// Decoding follows Go's `encoding/json`, which the seed's clients were written against: keys
/// match case-insensitively (`name` works), unknown keys are ignored, and `Tags` may be absent
/// or `null`. Unlike Go, a key given twice (`{"Name":"a","name":"b"}`) is refused: a proxy that
/// checked the first Name must not be able to be fooled into registering the second.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Registration {
    #[serde(rename = "Name")]
    pub name: String,
    #[serde(rename = "Address")]
    pub address: String,
    #[serde(rename = "Tags")]
    pub tags: Vec<String>,
    /// A Go duration (`"30s"`); absent, the record has no lease (the seed's body).
    #[serde(rename = "TTL", skip_serializing_if = "Option::is_none")]
    pub ttl: Option<String>,
}

/// What `POST /deregister` takes: `{"Name": "..."}`, keys matched as for [`Registration`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Deregistration {
    #[serde(rename = "Name")]
    pub name: String,
}

/// An endpoint's health, as Consul users know it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Registered, not yet checked.
    Pending,
    /// The last check passed.
    Passing,
    /// Failed enough checks in a row to be taken out of rotation.
    Critical,
}

impl Status {
    /// Every status, in the order the page counts them.
    pub const ALL: [Status; 3] = [Status::Passing, Status::Pending, Status::Critical];

    /// The name used in JSON and in `?status=`.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Passing => "passing",
            Status::Critical => "critical",
        }
    }

    /// The status's place in [`Status::ALL`], for per-status counts.
    pub fn index(self) -> usize {
        match self {
            Status::Passing => 0,
            Status::Pending => 1,
            Status::Critical => 2,
        }
    }

    /// Parses the name used in JSON and in `?status=`.
    pub fn parse(text: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One endpoint as the registry serves it: the seed's fields plus its health, in the same style.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Endpoint {
    pub name: String,
    pub address: String,
    pub tags: Vec<String>,
    pub status: Status,
    /// RFC 3339, UTC: when this Name was registered at this Address.
    pub registered_at: String,
    /// RFC 3339, UTC: when the last check finished; null before the first.
    pub last_check: Option<String>,
    /// Why the last check failed; null when it passed.
    pub last_error: Option<String>,
    pub consecutive_failures: u32,
    /// RFC 3339, UTC: when the lease ends unless the instance registers again. Only on records
    /// registered with a `TTL`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
}

/// The body of every error answer: `{"error": "one clear sentence"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
}

impl<'de> Deserialize<'de> for Registration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let body = d.deserialize_map(BodyVisitor)?;
        Ok(Registration {
            name: body.name.unwrap_or_default(),
            address: body.address.unwrap_or_default(),
            tags: body.tags.unwrap_or_default(),
            ttl: body.ttl,
        })
    }
}

impl<'de> Deserialize<'de> for Deregistration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let body = d.deserialize_map(BodyVisitor)?;
        Ok(Deregistration { name: body.name.unwrap_or_default() })
    }
}

/// The fields a body may carry; `None` when absent or `null`, as Go leaves them zero.
#[derive(Default)]
struct Body {
    name: Option<String>,
    address: Option<String>,
    tags: Option<Vec<String>>,
    ttl: Option<String>,
}

enum Key {
    Name,
    Address,
    Tags,
    Ttl,
    Other,
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = Key;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a field name")
            }
            fn visit_str<E: de::Error>(self, key: &str) -> Result<Key, E> {
                Ok(if key.eq_ignore_ascii_case("name") {
                    Key::Name
                } else if key.eq_ignore_ascii_case("address") {
                    Key::Address
                } else if key.eq_ignore_ascii_case("tags") {
                    Key::Tags
                } else if key.eq_ignore_ascii_case("ttl") {
                    Key::Ttl
                } else {
                    Key::Other
                })
            }
        }
        d.deserialize_identifier(KeyVisitor)
    }
}

/// Prefixes a decoding error with the field it concerns.
fn named<E: de::Error>(field: &'static str) -> impl Fn(E) -> E {
    move |e| E::custom(format_args!("field {field}: {e}"))
}

/// Refuses a field given a second time (keys match in any case, so `Name` and `name` are one).
fn once<E: de::Error>(seen: &mut bool, field: &'static str) -> Result<(), E> {
    if std::mem::replace(seen, true) {
        return Err(E::custom(format_args!("field {field} is given twice (keys match in any case)")));
    }
    Ok(())
}

struct BodyVisitor;

impl<'de> Visitor<'de> for BodyVisitor {
    type Value = Body;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            "a JSON object like {\"Name\": \"pod-abc\", \"Address\": \"10.240.0.2:52238\", \"Tags\": [\"web\"]}",
        )
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Body, A::Error> {
        let mut body = Body::default();
        // Name, Address, Tags, TTL: whether each was given yet.
        let mut seen = [false; 4];
        while let Some(key) = map.next_key::<Key>()? {
            match key {
                Key::Name => {
                    once::<A::Error>(&mut seen[0], "Name")?;
                    body.name = map.next_value().map_err(named::<A::Error>("Name"))?;
                }
                Key::Address => {
                    once::<A::Error>(&mut seen[1], "Address")?;
                    body.address = map.next_value().map_err(named::<A::Error>("Address"))?;
                }
                Key::Tags => {
                    once::<A::Error>(&mut seen[2], "Tags")?;
                    body.tags = map.next_value().map_err(named::<A::Error>("Tags"))?;
                }
                Key::Ttl => {
                    once::<A::Error>(&mut seen[3], "TTL")?;
                    body.ttl = map.next_value().map_err(named::<A::Error>("TTL"))?;
                }
                Key::Other => {
                    map.next_value::<de::IgnoredAny>()?;
                }
            }
        }
        Ok(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_the_go_clients_exact_body() {
        let body =
            b"{\"Name\":\"dynamic-port-server-507527175-5bphp\",\"Address\":\"10.240.0.2:52238\",\"Tags\":null}\n";
        let reg: Registration = serde_json::from_slice(body).unwrap();
        assert_eq!(
            reg,
            Registration {
                name: "dynamic-port-server-507527175-5bphp".into(),
                address: "10.240.0.2:52238".into(),
                tags: vec![],
                ttl: None,
            }
        );
    }

    #[test]
    fn matches_keys_as_go_does() {
        let cases: &[(&str, &str, &str, &[&str])] = &[
            (r#"{"name":"a","address":"1.2.3.4:5"}"#, "a", "1.2.3.4:5", &[]),
            (r#"{"NAME":"a","ADDRESS":"1.2.3.4:5","TAGS":["x"]}"#, "a", "1.2.3.4:5", &["x"]),
            (r#"{"nAmE":"a","Address":"1.2.3.4:5","Extra":{"deep":[1]}}"#, "a", "1.2.3.4:5", &[]),
            (r#"{"Name":null,"Address":null,"Tags":null}"#, "", "", &[]),
        ];
        for (json, name, address, tags) in cases {
            let reg: Registration = serde_json::from_str(json).unwrap_or_else(|e| panic!("{json}: {e}"));
            assert_eq!((reg.name.as_str(), reg.address.as_str()), (*name, *address), "{json}");
            assert_eq!(reg.tags, *tags, "{json}");
        }
    }

    #[test]
    fn reads_ttl_in_any_case_and_names_it_when_it_is_not_a_string() {
        let reg: Registration = serde_json::from_str(r#"{"Name":"a","Address":"1.2.3.4:5","ttl":"30s"}"#).unwrap();
        assert_eq!(reg.ttl.as_deref(), Some("30s"));
        let reg: Registration = serde_json::from_str(r#"{"Name":"a","Address":"1.2.3.4:5","TTL":null}"#).unwrap();
        assert_eq!(reg.ttl, None);
        let err = serde_json::from_str::<Registration>(r#"{"Name":"a","TTL":30}"#).unwrap_err();
        assert!(err.to_string().starts_with("field TTL: invalid type: integer `30`"), "{err}");
    }

    #[test]
    fn refuses_a_key_given_twice_in_any_case() {
        for json in [
            r#"{"Name":"a","Name":"b","Address":"1.2.3.4:5"}"#,
            r#"{"Name":"a","name":"b","Address":"1.2.3.4:5"}"#,
            r#"{"Name":"a","Address":"1.2.3.4:5","ADDRESS":"5.6.7.8:9"}"#,
            r#"{"Name":"a","Address":"1.2.3.4:5","Tags":null,"tags":["x"]}"#,
        ] {
            let err = serde_json::from_str::<Registration>(json).unwrap_err();
            assert!(err.is_data() && err.to_string().contains("is given twice"), "{json}: {err}");
        }
        let err = serde_json::from_str::<Deregistration>(r#"{"name":"a","NAME":"b"}"#).unwrap_err();
        assert!(err.to_string().starts_with("field Name is given twice"), "{err}");
        // Unknown keys are ignored, however often they come.
        assert!(serde_json::from_str::<Registration>(r#"{"Name":"a","x":1,"x":2}"#).is_ok());
    }

    #[test]
    fn wrong_types_name_the_field() {
        let err = serde_json::from_str::<Registration>(r#"{"Name":5}"#).unwrap_err();
        assert!(err.to_string().starts_with("field Name: invalid type: integer `5`"), "{err}");
        let err = serde_json::from_str::<Registration>(r#"{"Name":"a","Tags":"web"}"#).unwrap_err();
        assert!(err.to_string().starts_with("field Tags:"), "{err}");
        assert!(serde_json::from_str::<Registration>("[1]").is_err());
    }

    #[test]
    fn every_status_indexes_its_place_in_all() {
        for (i, status) in Status::ALL.into_iter().enumerate() {
            assert_eq!(status.index(), i);
        }
    }

    #[test]
    fn records_keep_the_seeds_field_names() {
        let record = Endpoint {
            name: "a".into(),
            address: "10.0.0.1:80".into(),
            tags: vec!["web".into()],
            status: Status::Passing,
            registered_at: "2017-02-03T20:37:38.000Z".into(),
            last_check: None,
            last_error: None,
            consecutive_failures: 0,
            expires_at: None,
        };
        assert_eq!(
            serde_json::to_string(&record).unwrap(),
            r#"{"Name":"a","Address":"10.0.0.1:80","Tags":["web"],"Status":"passing","RegisteredAt":"2017-02-03T20:37:38.000Z","LastCheck":null,"LastError":null,"ConsecutiveFailures":0}"#
        );
        let reg = Registration { name: "a".into(), address: "10.0.0.1:80".into(), tags: vec![], ttl: None };
        assert_eq!(serde_json::to_string(&reg).unwrap(), r#"{"Name":"a","Address":"10.0.0.1:80","Tags":[]}"#);
        let leased = Registration { ttl: Some("30s".into()), ..reg };
        assert_eq!(
            serde_json::to_string(&leased).unwrap(),
            r#"{"Name":"a","Address":"10.0.0.1:80","Tags":[],"TTL":"30s"}"#
        );
    }
}
