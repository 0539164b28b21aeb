//! EndpointSlices and Services as the Kubernetes API speaks them: reading what the mirror
//! needs out of the API's JSON, and writing the slices it manages. Pure: no I/O.

use crate::reconcile::{Member, Shape, Slice};
use serde_json::{json, Value};

/// The annotation a Service opts in with: the registry tag whose endpoints back it.
pub const TAG_ANNOTATION: &str = "dynamic-ports/tag";
/// `endpointslice.kubernetes.io/managed-by` on every slice the mirror writes; it touches no other.
pub const MANAGED_BY: &str = "dynamic-ports-mirror";
const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// A Service that asks for mirrored endpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    pub name: String,
    pub uid: String,
    pub tag: String,
    /// The Service's (first) port name and protocol: every slice's port carries them, which is
    /// how kube-proxy matches a slice's port to the Service's.
    pub port_name: String,
    pub protocol: String,
}

/// The Services in a `ServiceList` that opt in: annotated, and without a selector (a selector
/// means Kubernetes' own controller writes its endpoints).
pub fn opted_in(list: &Value) -> Vec<Service> {
    let items = list["items"].as_array().map(Vec::as_slice).unwrap_or_default();
    items
        .iter()
        .filter_map(|item| {
            let meta = &item["metadata"];
            let tag = meta["annotations"][TAG_ANNOTATION].as_str()?.trim();
            let has_selector = item["spec"]["selector"].as_object().is_some_and(|s| !s.is_empty());
            if tag.is_empty() || has_selector {
                return None;
            }
            let port = &item["spec"]["ports"][0];
            Some(Service {
                name: meta["name"].as_str()?.to_string(),
                uid: meta["uid"].as_str()?.to_string(),
                tag: tag.to_string(),
                port_name: port["name"].as_str().unwrap_or_default().to_string(),
                protocol: port["protocol"].as_str().unwrap_or("TCP").to_string(),
            })
        })
        .collect()
}

/// The managed slices in an `EndpointSliceList`, by the Service each belongs to.
pub fn managed(list: &Value) -> Vec<(String, Slice)> {
    let items = list["items"].as_array().map(Vec::as_slice).unwrap_or_default();
    items
        .iter()
        .filter(|item| item["metadata"]["labels"][MANAGED_BY_LABEL] == MANAGED_BY)
        .filter_map(|item| {
            let meta = &item["metadata"];
            let service = meta["labels"][SERVICE_NAME_LABEL].as_str()?.to_string();
            let port = item["ports"][0]["port"].as_u64().and_then(|p| u16::try_from(p).ok()).unwrap_or(0);
            let members = item["endpoints"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default()
                .iter()
                .filter_map(|e| {
                    let ip = e["addresses"][0].as_str()?.parse().ok()?;
                    // The API's default for an absent `ready` is "unknown", which kube-proxy
                    // treats as ready; the mirror always writes it.
                    Some(Member { ip, ready: e["conditions"]["ready"].as_bool().unwrap_or(true) })
                })
                .collect();
            let slice = Slice {
                name: meta["name"].as_str()?.to_string(),
                resource_version: meta["resourceVersion"].as_str().unwrap_or_default().to_string(),
                shape: Shape { port, ipv6: item["addressType"] == "IPv6" },
                members,
            };
            Some((service, slice))
        })
        .collect()
}

/// The label selector that lists only the mirror's slices.
pub fn managed_selector() -> String {
    format!("{MANAGED_BY_LABEL}={MANAGED_BY}")
}

/// A slice of `service` as the API takes it: a new one (`name: None`, named by the API from
/// the Service's name) or a replacement of `name` at `resource_version`.
pub fn slice_object(
    api_version: &str,
    service: &Service,
    name: Option<(&str, &str)>,
    shape: Shape,
    members: &[Member],
) -> Value {
    let mut metadata = json!({
        "labels": { SERVICE_NAME_LABEL: service.name, MANAGED_BY_LABEL: MANAGED_BY },
        // Owned by the Service: deleted with it by the garbage collector.
        "ownerReferences": [{
            "apiVersion": "v1", "kind": "Service", "name": service.name, "uid": service.uid, "controller": true
        }],
    });
    match name {
        Some((name, resource_version)) => {
            metadata["name"] = json!(name);
            metadata["resourceVersion"] = json!(resource_version);
        }
        None => metadata["generateName"] = json!(format!("{}-", service.name)),
    }
    let endpoints: Vec<Value> =
        members.iter().map(|m| json!({"addresses": [m.ip.to_string()], "conditions": {"ready": m.ready}})).collect();
    json!({
        "apiVersion": api_version,
        "kind": "EndpointSlice",
        "metadata": metadata,
        "addressType": shape.address_type(),
        "endpoints": endpoints,
        "ports": [{"name": service.port_name, "port": shape.port, "protocol": service.protocol}],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn web() -> Service {
        Service {
            name: "web".into(),
            uid: "uid-1".into(),
            tag: "web".into(),
            port_name: "http".into(),
            protocol: "TCP".into(),
        }
    }

    #[test]
    fn only_annotated_services_without_a_selector_opt_in() {
        let list = json!({"items": [
            {"metadata": {"name": "web", "uid": "uid-1", "annotations": {"dynamic-ports/tag": "web"}},
             "spec": {"ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}},
            {"metadata": {"name": "selected", "uid": "uid-2", "annotations": {"dynamic-ports/tag": "web"}},
             "spec": {"selector": {"app": "x"}, "ports": [{"name": "http", "port": 80}]}},
            {"metadata": {"name": "plain", "uid": "uid-3"}, "spec": {"ports": [{"port": 80}]}},
        ]});
        assert_eq!(opted_in(&list), [web()]);
    }

    #[test]
    fn a_written_slice_reads_back_as_the_same_slice() {
        let members = [
            Member { ip: "10.0.0.1".parse().unwrap(), ready: true },
            Member { ip: "10.0.0.2".parse().unwrap(), ready: false },
        ];
        let shape = Shape { port: 40001, ipv6: false };
        let mut object = slice_object("discovery.k8s.io/v1", &web(), None, shape, &members);
        assert_eq!(object["metadata"]["generateName"], "web-");
        assert_eq!(object["metadata"]["ownerReferences"][0]["uid"], "uid-1");
        assert_eq!(object["ports"][0], json!({"name": "http", "port": 40001, "protocol": "TCP"}));
        // As the API answers it: named, versioned.
        object["metadata"]["name"] = json!("web-abcde");
        object["metadata"]["resourceVersion"] = json!("42");
        let read = managed(&json!({"items": [object]}));
        assert_eq!(
            read,
            [(
                "web".to_string(),
                Slice { name: "web-abcde".into(), resource_version: "42".into(), shape, members: members.to_vec() }
            )]
        );
        let update = slice_object("discovery.k8s.io/v1beta1", &web(), Some(("web-abcde", "42")), shape, &members);
        assert_eq!(
            (update["metadata"]["name"].as_str(), update["metadata"]["resourceVersion"].as_str()),
            (Some("web-abcde"), Some("42"))
        );
        assert_eq!(update["apiVersion"], "discovery.k8s.io/v1beta1");
    }

    #[test]
    fn slices_managed_by_others_are_not_ours() {
        let list = json!({"items": [{"metadata": {"name": "x", "labels": {
            "kubernetes.io/service-name": "web", "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"}},
            "addressType": "IPv4", "ports": [{"port": 80}], "endpoints": []}]});
        assert!(managed(&list).is_empty());
    }
}
