//! One pass of the mirror: read the opted-in Services and the slices it manages, reconcile each
//! Service with the registry's listing, and write the difference. Every write names the
//! resourceVersion it replaces; a conflict ends the pass, and the next starts from a fresh read.

use crate::kube::{Answer, Client};
use crate::metrics::Metrics;
use crate::reconcile::{reconcile, Action, Backend};
use crate::registry::{backends, Listing};
use crate::slices::{self, Service};
use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

pub struct Mirror {
    kube: Client,
    namespace: String,
    /// `discovery.k8s.io/v1` where served, else `discovery.k8s.io/v1beta1` (Kubernetes 1.20).
    api_version: String,
    max_per_slice: usize,
    metrics: Arc<Metrics>,
    /// Each Service's endpoints as last logged, to log a line only when they change.
    logged: HashMap<String, Vec<Backend>>,
}

impl Mirror {
    /// Asks the API which EndpointSlice version it serves.
    pub fn new(kube: Client, namespace: String, max_per_slice: usize, metrics: Arc<Metrics>) -> Result<Mirror, String> {
        let v1 = kube.call("GET", "/apis/discovery.k8s.io/v1", None)?;
        let api_version = if v1.ok() { "discovery.k8s.io/v1" } else { "discovery.k8s.io/v1beta1" }.to_string();
        log::info!("Writing EndpointSlices as {api_version} in namespace {namespace}");
        Ok(Mirror { kube, namespace, api_version, max_per_slice, metrics, logged: HashMap::new() })
    }

    fn slices_path(&self) -> String {
        format!("/apis/{}/namespaces/{}/endpointslices", self.api_version, self.namespace)
    }

    fn read(&self, path: &str) -> Result<serde_json::Value, String> {
        let answer = self.kube.call("GET", path, None)?;
        if !answer.ok() {
            return Err(format!("GET {path}: {}", answer.message()));
        }
        Ok(answer.body)
    }

    /// Brings every opted-in Service's slices in line with `listing`.
    pub fn sync(&mut self, listing: &Listing) -> Result<(), String> {
        let services = slices::opted_in(&self.read(&format!("/api/v1/namespaces/{}/services", self.namespace))?);
        let selector = slices::managed_selector().replace('=', "%3D").replace('/', "%2F");
        let mut existing: HashMap<String, Vec<_>> = HashMap::new();
        for (service, slice) in
            slices::managed(&self.read(&format!("{}?labelSelector={selector}", self.slices_path()))?)
        {
            existing.entry(service).or_default().push(slice);
        }
        for service in &services {
            let wanted = backends(listing, &service.tag);
            let have = existing.remove(&service.name).unwrap_or_default();
            for action in reconcile(&wanted, &have, self.max_per_slice, listing.warming) {
                self.apply(service, action)?;
            }
            self.log_change(service, wanted, listing.warming);
        }
        // Slices of Services that no longer opt in (the annotation was removed, or the Service
        // is gone and the garbage collector has not been by yet).
        for (service, slices) in existing {
            for slice in slices {
                self.delete(&slice.name)?;
            }
            if self.logged.remove(&service).is_some() {
                log::info!("Service {service} no longer opts in: its EndpointSlices are removed");
            }
        }
        self.metrics.syncs.fetch_add(1, Relaxed);
        Ok(())
    }

    fn apply(&self, service: &Service, action: Action) -> Result<(), String> {
        let (method, path, body) = match &action {
            Action::Create { shape, members } => {
                ("POST", self.slices_path(), slices::slice_object(&self.api_version, service, None, *shape, members))
            }
            Action::Update { name, resource_version, shape, members } => (
                "PUT",
                format!("{}/{name}", self.slices_path()),
                slices::slice_object(&self.api_version, service, Some((name, resource_version)), *shape, members),
            ),
            Action::Delete { name } => return self.delete(name),
        };
        let answer = self.kube.call(method, &path, Some(&body))?;
        self.written(&answer, method, &path)?;
        self.metrics.slices_written.fetch_add(1, Relaxed);
        Ok(())
    }

    fn delete(&self, name: &str) -> Result<(), String> {
        let path = format!("{}/{name}", self.slices_path());
        let answer = self.kube.call("DELETE", &path, None)?;
        if answer.status == 404 {
            return Ok(());
        }
        self.written(&answer, "DELETE", &path)?;
        self.metrics.slices_deleted.fetch_add(1, Relaxed);
        Ok(())
    }

    fn written(&self, answer: &Answer, method: &str, path: &str) -> Result<(), String> {
        if answer.status == 409 {
            self.metrics.conflicts.fetch_add(1, Relaxed);
            return Err(format!("{method} {path}: changed meanwhile ({}); reading again", answer.message()));
        }
        if !answer.ok() {
            return Err(format!("{method} {path}: {}", answer.message()));
        }
        Ok(())
    }

    /// One line per change of a Service's set of endpoints.
    fn log_change(&mut self, service: &Service, mut now: Vec<Backend>, warming: bool) {
        now.sort();
        if self.logged.get(&service.name) == Some(&now) {
            return;
        }
        let ready = now.iter().filter(|b| b.ready).count();
        let list: Vec<String> = now.iter().map(|b| std::net::SocketAddr::new(b.ip, b.port).to_string()).collect();
        let note = if warming { " (registry warming up: nothing removed)" } else { "" };
        log::info!(
            "Service {} (tag {}): {} endpoints, {ready} ready: {}{note}",
            service.name,
            service.tag,
            now.len(),
            list.join(" ")
        );
        self.logged.insert(service.name.clone(), now);
    }
}
