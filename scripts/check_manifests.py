#!/usr/bin/env python3
"""Checks of the Kubernetes manifests that schema validation cannot make.

Usage: check_manifests.py VERSION FILE...

- every Deployment's selector matches its own pod template's labels;
- every Service selects the pods of some Deployment, and each of its ports targets a port
  those pods declare (by name or number); except a Service mirrored from the registry
  (annotation dynamic-ports/tag, no selector), whose ports must be named: the mirror's
  EndpointSlices carry that name;
- every NetworkPolicy selects a Deployment's pods, admits ports they declare, and admits
  pods (by podSelector) that some Deployment makes;
- every httpGet probe targets a declared container port;
- images are service-registry / dynamic-port-server / endpointslice-mirror tagged with VERSION;
- memory stays within the seed's 10Mi request / 20Mi limit;
- the security settings (non-root, read-only root, no privilege escalation, all capabilities
  dropped, RuntimeDefault seccomp, no service-account token except for the mirror, which
  writes EndpointSlices through the API and has its own ServiceAccount);
- a hostNetwork pod uses dnsPolicy ClusterFirstWithHostNet, gets POD_NAME and HOST_IP from
  the Downward API, and has a grace period that fits its deregistration (up to 2s);
- an exec probe's -port-file is the one the container is started with, in a mounted volume.

Prints one line per problem and exits 1 if there is any; needs PyYAML (the validator venv
made by scripts/install-tools.sh has it, through checkov).
"""
import re
import sys

import yaml

IMAGES = {"service-registry", "dynamic-port-server", "endpointslice-mirror"}
# The one Deployment that talks to the Kubernetes API, with a ServiceAccount of its own.
API_CLIENTS = {"endpointslice-mirror"}
MIRROR_ANNOTATION = "dynamic-ports/tag"
MEMORY_REQUEST_MAX = 10 * 2**20
MEMORY_LIMIT_MAX = 20 * 2**20
UNITS = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "k": 10**3, "M": 10**6, "G": 10**9, "": 1}

problems = []


def problem(where, text):
    problems.append(f"{where}: {text}")


def quantity(text):
    m = re.fullmatch(r"([0-9.]+)(Ki|Mi|Gi|k|M|G|)", str(text))
    if not m:
        return None
    return float(m.group(1)) * UNITS[m.group(2)]


def selector_matches(selector, labels):
    """A LabelSelector (matchLabels and matchExpressions) against a set of labels."""
    if not selector or not (selector.get("matchLabels") or selector.get("matchExpressions")):
        return False
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def declared_ports(pod_spec):
    names, numbers = set(), set()
    for c in pod_spec.get("containers") or []:
        for p in c.get("ports") or []:
            if "name" in p:
                names.add(p["name"])
            numbers.add(p.get("containerPort"))
    return names, numbers


def port_declared(port, names, numbers):
    return port in names if isinstance(port, str) else port in numbers


def check_deployment(where, doc, version):
    spec = doc.get("spec") or {}
    template = spec.get("template") or {}
    labels = (template.get("metadata") or {}).get("labels") or {}
    if not selector_matches(spec.get("selector"), labels):
        problem(where, f"selector {spec.get('selector')} does not match the template labels {labels}")
    pod = template.get("spec") or {}
    name = (doc.get("metadata") or {}).get("name")
    if name in API_CLIENTS:
        if pod.get("serviceAccountName") != name:
            problem(where, f"an API client runs as its own ServiceAccount {name!r}, not the namespace's default")
    elif pod.get("automountServiceAccountToken") is not False:
        problem(where, "automountServiceAccountToken must be false")
    if pod.get("hostNetwork") and pod.get("dnsPolicy") != "ClusterFirstWithHostNet":
        problem(where, "a hostNetwork pod needs dnsPolicy: ClusterFirstWithHostNet to resolve Services")
    pod_sc = pod.get("securityContext") or {}
    names, numbers = declared_ports(pod)
    volumes = {v.get("name") for v in pod.get("volumes") or []}
    for c in pod.get("containers") or []:
        cw = f"{where}: container {c.get('name')}"
        image = c.get("image", "")
        m = re.fullmatch(r"(?:.*/)?([a-z0-9-]+):([^:@/]+)", image)
        if not m or m.group(1) not in IMAGES:
            problem(cw, f"image {image!r} is not service-registry:TAG or dynamic-port-server:TAG")
        elif m.group(2) != version:
            problem(cw, f"image {image!r} is not tagged with the version in Cargo.toml ({version})")
        res = c.get("resources") or {}
        req = quantity((res.get("requests") or {}).get("memory"))
        lim = quantity((res.get("limits") or {}).get("memory"))
        if req is None or req > MEMORY_REQUEST_MAX:
            problem(cw, "memory request missing or over 10Mi")
        if lim is None or lim > MEMORY_LIMIT_MAX:
            problem(cw, "memory limit missing or over 20Mi")
        for probe in ("readinessProbe", "livenessProbe"):
            p = c.get(probe)
            if not p:
                problem(cw, f"no {probe}")
            elif "httpGet" in p and not port_declared(p["httpGet"].get("port"), names, numbers):
                problem(cw, f"{probe} targets port {p['httpGet'].get('port')!r}, which no container declares")
        if pod.get("hostNetwork"):
            fields = {e.get("name"): ((e.get("valueFrom") or {}).get("fieldRef") or {}).get("fieldPath")
                      for e in c.get("env") or []}
            for var, path in (("POD_NAME", "metadata.name"), ("HOST_IP", "status.hostIP")):
                if fields.get(var) != path:
                    problem(cw, f"{var} must come from the Downward API ({path})")
            grace = pod.get("terminationGracePeriodSeconds", 30)
            if not 3 <= grace <= 30:
                problem(cw, f"terminationGracePeriodSeconds {grace} does not fit a deregistration of up to 2s")
        # An exec probe that reads a -port-file needs the server to write that same file,
        # in a mounted (writable) volume: the root filesystem is read-only.
        mounts = [vm.get("mountPath", "").rstrip("/") for vm in c.get("volumeMounts") or []]
        args = (c.get("command") or []) + (c.get("args") or [])
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            for arg in ((c.get(probe) or {}).get("exec") or {}).get("command") or []:
                if arg.startswith("-port-file="):
                    if arg not in args:
                        problem(cw, f"{probe} reads {arg} but the container is not started with it")
                    if arg.split("=", 1)[1].rsplit("/", 1)[0] not in mounts:
                        problem(cw, f"{probe}'s {arg} is not in a mounted volume (the root is read-only)")
        for vm in c.get("volumeMounts") or []:
            if vm.get("name") not in volumes:
                problem(cw, f"mounts volume {vm.get('name')!r}, which the pod does not declare")
        sc = c.get("securityContext") or {}

        def setting(key):
            return sc.get(key, pod_sc.get(key))

        if setting("runAsNonRoot") is not True:
            problem(cw, "runAsNonRoot must be true")
        if sc.get("readOnlyRootFilesystem") is not True:
            problem(cw, "readOnlyRootFilesystem must be true")
        if sc.get("allowPrivilegeEscalation") is not False:
            problem(cw, "allowPrivilegeEscalation must be false")
        if "ALL" not in ((sc.get("capabilities") or {}).get("drop") or []):
            problem(cw, "capabilities must drop ALL")
        if (setting("seccompProfile") or {}).get("type") != "RuntimeDefault":
            problem(cw, "seccompProfile must be RuntimeDefault")
    return labels, pod


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    version, files = sys.argv[1], sys.argv[2:]
    deployments, services, policies = [], [], []
    for path in files:
        try:
            with open(path) as f:
                docs = [d for d in yaml.safe_load_all(f) if d]
        except (OSError, yaml.YAMLError) as e:
            problem(path, f"cannot read: {e}")
            continue
        for doc in docs:
            kind = doc.get("kind")
            where = f"{path}: {kind} {(doc.get('metadata') or {}).get('name')}"
            if kind == "Deployment":
                deployments.append((where, check_deployment(where, doc, version)))
            elif kind == "Service":
                services.append((where, doc))
            elif kind == "NetworkPolicy":
                policies.append((where, doc))
    for where, doc in services:
        spec = doc.get("spec") or {}
        selector = spec.get("selector") or {}
        if MIRROR_ANNOTATION in ((doc.get("metadata") or {}).get("annotations") or {}):
            if selector:
                problem(where, f"a mirrored Service ({MIRROR_ANNOTATION}) has no selector; it has {selector}")
            for port in spec.get("ports") or []:
                if not port.get("name"):
                    problem(where, f"port {port.get('port')} has no name: the mirror's slices match ports by name")
            continue
        targets = [(dw, pod) for dw, (labels, pod) in deployments
                   if selector and selector_matches({"matchLabels": selector}, labels)]
        if not targets:
            problem(where, f"selector {selector} selects the pods of no Deployment")
            continue
        for port in spec.get("ports") or []:
            target = port.get("targetPort", port.get("port"))
            if not any(port_declared(target, *declared_ports(pod)) for _, pod in targets):
                problem(where, f"port {port.get('port')} targets {target!r}, which the selected pods do not declare")
    for where, doc in policies:
        spec = doc.get("spec") or {}
        targets = [pod for _, (labels, pod) in deployments if selector_matches(spec.get("podSelector"), labels)]
        if not targets:
            problem(where, f"podSelector {spec.get('podSelector')} selects the pods of no Deployment")
            continue
        for rule in spec.get("ingress") or []:
            for port in rule.get("ports") or []:
                if "port" in port and not any(port_declared(port["port"], *declared_ports(pod)) for pod in targets):
                    problem(where, f"admits port {port['port']!r}, which the selected pods do not declare")
            for peer in rule.get("from") or []:
                sel = peer.get("podSelector")
                if sel and (sel.get("matchLabels") or sel.get("matchExpressions")) and not any(
                        selector_matches(sel, labels) for _, (labels, _) in deployments):
                    problem(where, f"admits pods {sel}, which no Deployment makes")
    if not deployments:
        problem("manifests", "no Deployment found")
    for p in problems:
        print(f"FAIL {p}")
    if problems:
        sys.exit(1)
    print(f"ok: {len(deployments)} Deployments, {len(services)} Services, {len(policies)} NetworkPolicies: selectors, ports, "
          f"images ({version}), resources and security settings agree")


if __name__ == "__main__":
    main()
