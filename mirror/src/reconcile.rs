//! What the mirror must change: a pure function from the registry's endpoints for one Service
//! and that Service's managed EndpointSlices to the creates, updates and deletes that make the
//! slices say what the registry says. No I/O here, so every rule is a table test.
//!
//! A slice's ports apply to every endpoint in it, and dynamic ports differ per instance: so one
//! slice per (port, address family), split when it would hold more than `max_per_slice`
//! endpoints. Endpoints stay in the slice they are in (an added instance rewrites one slice,
//! not every slice after it in sort order).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

/// One instance as the registry lists it: where it listens and whether it is passing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Backend {
    pub ip: IpAddr,
    pub port: u16,
    pub ready: bool,
}

/// An endpoint inside a slice: its address and `conditions.ready`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Member {
    pub ip: IpAddr,
    pub ready: bool,
}

/// A slice's identity: its port and address family (`IPv4` or `IPv6`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Shape {
    pub port: u16,
    pub ipv6: bool,
}

impl Shape {
    pub fn of(ip: IpAddr, port: u16) -> Shape {
        Shape { port, ipv6: ip.is_ipv6() }
    }

    /// The slice's `addressType`.
    pub fn address_type(self) -> &'static str {
        if self.ipv6 {
            "IPv6"
        } else {
            "IPv4"
        }
    }
}

/// A managed slice as the API holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slice {
    pub name: String,
    /// For optimistic concurrency: an update names the version it replaces.
    pub resource_version: String,
    pub shape: Shape,
    pub members: Vec<Member>,
}

/// One change to the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Create { shape: Shape, members: Vec<Member> },
    Update { name: String, resource_version: String, shape: Shape, members: Vec<Member> },
    Delete { name: String },
}

/// The changes that make `existing` hold `backends`, at most `max_per_slice` endpoints a slice.
/// With `keep_missing` (the registry is warming up after a restart, and its list is not yet
/// whole), endpoints that the slices have and the registry does not are kept as they are:
/// absence is no evidence then.
pub fn reconcile(backends: &[Backend], existing: &[Slice], max_per_slice: usize, keep_missing: bool) -> Vec<Action> {
    let max_per_slice = max_per_slice.max(1);
    let mut wanted: BTreeMap<Shape, BTreeMap<IpAddr, bool>> = BTreeMap::new();
    for b in backends {
        // Two Names at one address (a re-registration under a new Name): one endpoint, ready if
        // either is.
        let ready = wanted.entry(Shape::of(b.ip, b.port)).or_default().entry(b.ip).or_insert(false);
        *ready |= b.ready;
    }
    if keep_missing {
        for slice in existing {
            let members = wanted.entry(slice.shape).or_default();
            for m in &slice.members {
                members.entry(m.ip).or_insert(m.ready);
            }
        }
    }
    let mut by_shape: BTreeMap<Shape, Vec<&Slice>> = BTreeMap::new();
    for slice in existing {
        by_shape.entry(slice.shape).or_default().push(slice);
    }
    let mut actions = Vec::new();
    for (shape, slices) in &mut by_shape {
        slices.sort_by(|a, b| a.name.cmp(&b.name));
        if !wanted.contains_key(shape) {
            actions.extend(slices.iter().map(|s| Action::Delete { name: s.name.clone() }));
        }
    }
    for (shape, mut members) in wanted {
        let slices = by_shape.get(&shape).map(Vec::as_slice).unwrap_or_default();
        actions.extend(place(shape, &mut members, slices, max_per_slice));
    }
    actions
}

/// Places `members` of one shape into its `slices` (sorted by name): each keeps the members it
/// has that are still wanted, those with room take the new ones, and the rest go into new
/// slices.
fn place(shape: Shape, members: &mut BTreeMap<IpAddr, bool>, slices: &[&Slice], max: usize) -> Vec<Action> {
    let mut kept: Vec<Vec<Member>> = slices
        .iter()
        .map(|slice| {
            let mut seen = BTreeSet::new();
            slice
                .members
                .iter()
                .filter(|m| seen.insert(m.ip))
                .filter_map(|m| members.remove(&m.ip).map(|ready| Member { ip: m.ip, ready }))
                .take(max)
                .collect()
        })
        .collect();
    let mut left = std::mem::take(members).into_iter().map(|(ip, ready)| Member { ip, ready });
    for slice in &mut kept {
        while slice.len() < max {
            let Some(member) = left.next() else { break };
            slice.push(member);
        }
    }
    let mut actions = Vec::new();
    for (slice, members) in slices.iter().zip(kept) {
        let mut before = slice.members.clone();
        let mut after = members.clone();
        before.sort();
        after.sort();
        if after.is_empty() {
            actions.push(Action::Delete { name: slice.name.clone() });
        } else if before != after {
            actions.push(Action::Update {
                name: slice.name.clone(),
                resource_version: slice.resource_version.clone(),
                shape,
                members: after,
            });
        }
    }
    let rest: Vec<Member> = left.collect();
    for chunk in rest.chunks(max) {
        actions.push(Action::Create { shape, members: chunk.to_vec() });
    }
    actions
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    fn backend(last: u8, port: u16, ready: bool) -> Backend {
        Backend { ip: ip(last), port, ready }
    }

    fn slice(name: &str, port: u16, members: &[(u8, bool)]) -> Slice {
        Slice {
            name: name.into(),
            resource_version: format!("rv-{name}"),
            shape: Shape { port, ipv6: false },
            members: members.iter().map(|&(last, ready)| Member { ip: ip(last), ready }).collect(),
        }
    }

    fn members(list: &[(u8, bool)]) -> Vec<Member> {
        list.iter().map(|&(last, ready)| Member { ip: ip(last), ready }).collect()
    }

    fn v4(port: u16) -> Shape {
        Shape { port, ipv6: false }
    }

    #[test]
    fn nothing_to_do_when_the_slices_already_say_it() {
        let existing = [slice("web-a", 40001, &[(1, true), (2, false)])];
        let backends = [backend(2, 40001, false), backend(1, 40001, true)];
        assert_eq!(reconcile(&backends, &existing, 100, false), []);
    }

    #[test]
    fn one_slice_per_port_created_for_new_backends() {
        let backends = [backend(1, 40001, true), backend(1, 40002, true), backend(2, 40001, false)];
        assert_eq!(
            reconcile(&backends, &[], 100, false),
            [
                Action::Create { shape: v4(40001), members: members(&[(1, true), (2, false)]) },
                Action::Create { shape: v4(40002), members: members(&[(1, true)]) },
            ]
        );
    }

    #[test]
    fn readiness_follows_passing_and_a_changed_one_updates_its_slice_with_its_version() {
        let existing = [slice("web-a", 40001, &[(1, true)])];
        assert_eq!(
            reconcile(&[backend(1, 40001, false)], &existing, 100, false),
            [Action::Update {
                name: "web-a".into(),
                resource_version: "rv-web-a".into(),
                shape: v4(40001),
                members: members(&[(1, false)])
            }]
        );
    }

    #[test]
    fn a_port_change_deletes_the_old_ports_slice_and_creates_the_new_one() {
        let existing = [slice("web-a", 40001, &[(1, true)])];
        assert_eq!(
            reconcile(&[backend(1, 40007, true)], &existing, 100, false),
            [
                Action::Delete { name: "web-a".into() },
                Action::Create { shape: v4(40007), members: members(&[(1, true)]) }
            ]
        );
    }

    #[test]
    fn a_gone_backend_leaves_its_slice_and_an_emptied_slice_is_deleted() {
        let existing = [slice("web-a", 40001, &[(1, true), (2, true)]), slice("web-b", 40002, &[(3, true)])];
        assert_eq!(
            reconcile(&[backend(1, 40001, true)], &existing, 100, false),
            [
                Action::Delete { name: "web-b".into() },
                Action::Update {
                    name: "web-a".into(),
                    resource_version: "rv-web-a".into(),
                    shape: v4(40001),
                    members: members(&[(1, true)])
                },
            ]
        );
        assert_eq!(reconcile(&[], &existing, 100, false).len(), 2, "an empty registry list empties the Service");
    }

    #[test]
    fn while_the_registry_warms_up_nothing_it_lacks_is_removed() {
        let existing = [slice("web-a", 40001, &[(1, true), (2, true)]), slice("web-b", 40002, &[(3, true)])];
        assert_eq!(reconcile(&[], &existing, 100, true), [], "an empty, warming registry changes nothing");
        assert_eq!(
            reconcile(&[backend(4, 40001, true)], &existing, 100, true),
            [Action::Update {
                name: "web-a".into(),
                resource_version: "rv-web-a".into(),
                shape: v4(40001),
                members: members(&[(1, true), (2, true), (4, true)])
            }],
            "what comes back is added"
        );
    }

    #[test]
    fn more_endpoints_of_one_port_than_a_slice_holds_are_split_and_stay_put() {
        let backends: Vec<Backend> = (1..=250).map(|i| backend(i, 40001, true)).collect();
        let actions = reconcile(&backends, &[], 100, false);
        let sizes: Vec<usize> = actions
            .iter()
            .map(|a| match a {
                Action::Create { members, .. } => members.len(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(sizes, [100, 100, 50]);

        // An instance added to full slices goes where there is room; the full ones stay as they are.
        let full =
            |name: &str, from: u8| slice(name, 40001, &(from..from + 100).map(|i| (i, true)).collect::<Vec<_>>());
        let existing = [full("web-a", 1), full("web-b", 101), slice("web-c", 40001, &[(201, true)])];
        let mut backends: Vec<Backend> = (1..=201).map(|i| backend(i, 40001, true)).collect();
        backends.push(backend(250, 40001, true));
        assert_eq!(
            reconcile(&backends, &existing, 100, false),
            [Action::Update {
                name: "web-c".into(),
                resource_version: "rv-web-c".into(),
                shape: v4(40001),
                members: members(&[(201, true), (250, true)])
            }]
        );
    }

    #[test]
    fn many_ports_one_instance_each_make_one_slice_each() {
        let backends: Vec<Backend> = (0..30).map(|i| backend(1, 40000 + i, true)).collect();
        let actions = reconcile(&backends, &[], 100, false);
        assert_eq!(actions.len(), 30);
        assert!(actions.iter().all(|a| matches!(a, Action::Create { members, .. } if members.len() == 1)));
    }

    #[test]
    fn ipv6_endpoints_get_a_slice_of_their_own() {
        let v6 = Backend { ip: "fd00::1".parse().unwrap(), port: 40001, ready: true };
        let actions = reconcile(&[backend(1, 40001, true), v6], &[], 100, false);
        let types: Vec<&str> = actions
            .iter()
            .map(|a| match a {
                Action::Create { shape, .. } => shape.address_type(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(types, ["IPv4", "IPv6"]);
    }

    #[test]
    fn the_same_address_under_two_names_is_one_endpoint_ready_if_either_is() {
        let actions = reconcile(&[backend(1, 40001, false), backend(1, 40001, true)], &[], 100, false);
        assert_eq!(actions, [Action::Create { shape: v4(40001), members: members(&[(1, true)]) }]);
    }
}
