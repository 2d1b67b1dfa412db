"""Defaulting of the served kinds, as the real API server fills in what a manifest leaves out.

:func:`apply_defaults` runs on every create and update (in place). It sets what Kubernetes'
``SetDefaults_*`` functions set for the v1, apps/v1 and batch/v1 types, plus the values the
default admission plugins and registry strategies fill in that ``kubectl get -o yaml`` users
expect (a Pod's priority, its not-ready/unreachable tolerations, status ``Pending``; a
Service's IP family fields; a Namespace's ``kubernetes`` finalizer; a Job's generated
selector once the object has a uid). Every default only fills a missing value, so applying
defaults twice changes nothing — which is what lets a second ``kubectl apply`` of the same
file report "unchanged". :func:`prepare_for_update` carries server-assigned values (uid,
creation time, a Service's cluster IPs and node ports) from the stored object into an update
that left them out, as the API server does for ``kubectl replace``.
"""

from __future__ import annotations

import base64
import ipaddress
import re
from collections.abc import Callable
from typing import Any

from k3py.cluster.api.quantity import Quantity, QuantityError
from k3py.cluster.api.resources import ResourceInfo

JOB_NAME_LABELS = ("job-name", "batch.kubernetes.io/job-name")
CONTROLLER_UID_LABELS = ("controller-uid", "batch.kubernetes.io/controller-uid")
DEFAULT_MODE = 0o644
NOT_READY_TAINT = "node.kubernetes.io/not-ready"
UNREACHABLE_TAINT = "node.kubernetes.io/unreachable"
DEFAULT_TOLERATION_SECONDS = 300

Obj = dict[str, Any]


# Status fields Go's types carry without ``omitempty``: the real API server always sends
# them, as 0, even before a controller's first sync, and clients with strict models (the
# official client's pydantic models) reject a status without them.
STATUS_COUNTERS: dict[str, tuple[str, ...]] = {
    "ReplicaSet": ("replicas",),
    "DaemonSet": (
        "currentNumberScheduled",
        "numberMisscheduled",
        "desiredNumberScheduled",
        "numberReady",
    ),
    "PodDisruptionBudget": (
        "disruptionsAllowed",
        "currentHealthy",
        "desiredHealthy",
        "expectedPods",
    ),
}


def apply_defaults(info: ResourceInfo, obj: Obj) -> None:
    """Fill in the defaults of ``obj`` (a ``info.kind`` object) in place."""
    defaulter = _DEFAULTERS.get(info.kind)
    if defaulter is not None:
        defaulter(obj)
    default_status(info.kind, obj)


def default_status(kind: str, obj: Obj) -> None:
    """Give a ``kind`` object the status counters Kubernetes never omits (0 until counted)."""
    counters = STATUS_COUNTERS.get(kind)
    if counters:
        status = _child(obj, "status")
        for counter in counters:
            if status.get(counter) is None:
                status[counter] = 0


def prepare_for_update(info: ResourceInfo, obj: Obj, old: Obj) -> None:
    """Carry values the server assigned from ``old`` into ``obj`` where the update omits them."""
    meta = obj.setdefault("metadata", {})
    old_meta = old.get("metadata") or {}
    for key in ("uid", "creationTimestamp"):
        if not meta.get(key) and old_meta.get(key):
            meta[key] = old_meta[key]
    if info.kind == "Service":
        _carry_service_allocations(obj, old)


# --- pods and pod templates ------------------------------------------------------------------


def _default_pod(pod: Obj) -> None:
    spec = _child(pod, "spec")
    _default_pod_spec(spec)
    for field in ("containers", "initContainers"):
        for container in _items(spec, field):
            _requests_from_limits(container)
    spec.setdefault("enableServiceLinks", True)
    spec.setdefault("priority", 0)
    spec.setdefault("preemptionPolicy", "PreemptLowerPriority")
    if spec.get("hostNetwork"):
        for field in ("containers", "initContainers"):
            for container in _items(spec, field):
                for port in _items(container, "ports"):
                    if not port.get("hostPort"):
                        port["hostPort"] = port.get("containerPort")
    _default_tolerations(spec)
    status = _child(pod, "status")
    status.setdefault("phase", "Pending")
    status.setdefault("qosClass", pod_qos_class(spec))


def _default_pod_spec(spec: Obj) -> None:
    if not spec.get("dnsPolicy"):
        spec["dnsPolicy"] = "ClusterFirst"
    if not spec.get("restartPolicy"):
        spec["restartPolicy"] = "Always"
    if spec.get("securityContext") is None:
        spec["securityContext"] = {}
    if spec.get("terminationGracePeriodSeconds") is None:
        spec["terminationGracePeriodSeconds"] = 30
    if not spec.get("schedulerName"):
        spec["schedulerName"] = "default-scheduler"
    for field in ("containers", "initContainers", "ephemeralContainers"):
        for container in _items(spec, field):
            _default_container(container)
    for volume in _items(spec, "volumes"):
        _default_volume(volume)


def _default_pod_template(owner: Obj) -> None:
    template = _child(_child(owner, "spec"), "template")
    _default_pod_spec(_child(template, "spec"))


def _default_container(container: Obj) -> None:
    if not container.get("imagePullPolicy"):
        tag = image_tag(str(container.get("image") or ""))
        container["imagePullPolicy"] = "Always" if tag == "latest" else "IfNotPresent"
    if not container.get("terminationMessagePath"):
        container["terminationMessagePath"] = "/dev/termination-log"
    if not container.get("terminationMessagePolicy"):
        container["terminationMessagePolicy"] = "File"
    resources = container.get("resources")
    if not isinstance(resources, dict):
        resources = container["resources"] = {}
    for kind in ("limits", "requests"):
        if isinstance(resources.get(kind), dict):
            _round_resource_list(resources[kind])
    for port in _items(container, "ports"):
        if not port.get("protocol"):
            port["protocol"] = "TCP"
    for env in _items(container, "env"):
        value_from = env.get("valueFrom")
        if isinstance(value_from, dict):
            _default_field_ref(value_from)
            ref = value_from.get("resourceFieldRef")
            if isinstance(ref, dict) and ref.get("divisor") is None:
                ref["divisor"] = "0"
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        if isinstance(container.get(probe), dict):
            _default_probe(container[probe])
    lifecycle = container.get("lifecycle")
    if isinstance(lifecycle, dict):
        for hook in ("postStart", "preStop"):
            if isinstance(lifecycle.get(hook), dict):
                _default_http_get(lifecycle[hook])


def _default_probe(probe: Obj) -> None:
    for key, value in (
        ("timeoutSeconds", 1),
        ("periodSeconds", 10),
        ("successThreshold", 1),
        ("failureThreshold", 3),
    ):
        if not probe.get(key):
            probe[key] = value
    _default_http_get(probe)


def _default_http_get(handler: Obj) -> None:
    action = handler.get("httpGet")
    if isinstance(action, dict):
        if not action.get("path"):
            action["path"] = "/"
        if not action.get("scheme"):
            action["scheme"] = "HTTP"


def _default_field_ref(holder: Obj) -> None:
    ref = holder.get("fieldRef")
    if isinstance(ref, dict) and not ref.get("apiVersion"):
        ref["apiVersion"] = "v1"


# Every volume source a PodSpec knows; validation checks that a volume names exactly one.
VOLUME_SOURCES = (
    "hostPath",
    "emptyDir",
    "gcePersistentDisk",
    "awsElasticBlockStore",
    "gitRepo",
    "secret",
    "nfs",
    "iscsi",
    "glusterfs",
    "persistentVolumeClaim",
    "rbd",
    "flexVolume",
    "cinder",
    "cephfs",
    "flocker",
    "downwardAPI",
    "fc",
    "azureFile",
    "configMap",
    "vsphereVolume",
    "quobyte",
    "azureDisk",
    "photonPersistentDisk",
    "projected",
    "portworxVolume",
    "scaleIO",
    "storageos",
    "csi",
    "ephemeral",
    "image",
)


def _default_volume(volume: Obj) -> None:
    if not any(volume.get(source) is not None for source in VOLUME_SOURCES):
        volume["emptyDir"] = {}
    for source in ("secret", "configMap", "downwardAPI", "projected"):
        if isinstance(volume.get(source), dict) and volume[source].get("defaultMode") is None:
            volume[source]["defaultMode"] = DEFAULT_MODE
    if isinstance(volume.get("hostPath"), dict):
        volume["hostPath"].setdefault("type", "")
    if isinstance(volume.get("downwardAPI"), dict):
        for item in _items(volume["downwardAPI"], "items"):
            _default_field_ref(item)
    if isinstance(volume.get("projected"), dict):
        for projection in _items(volume["projected"], "sources"):
            if isinstance(projection.get("downwardAPI"), dict):
                for item in _items(projection["downwardAPI"], "items"):
                    _default_field_ref(item)
            token = projection.get("serviceAccountToken")
            if isinstance(token, dict) and not token.get("expirationSeconds"):
                token["expirationSeconds"] = 3600


def _requests_from_limits(container: Obj) -> None:
    resources = container.get("resources")
    if not isinstance(resources, dict) or not isinstance(resources.get("limits"), dict):
        return
    requests = resources.get("requests")
    if not isinstance(requests, dict):
        requests = resources["requests"] = {}
    for name, value in resources["limits"].items():
        requests.setdefault(name, value)


def _default_tolerations(spec: Obj) -> None:
    tolerations = spec.get("tolerations")
    if tolerations is not None and not isinstance(tolerations, list):
        return
    present = tolerations or []
    added = []
    for taint in (NOT_READY_TAINT, UNREACHABLE_TAINT):
        if any(
            isinstance(t, dict)
            and t.get("key") == taint
            and t.get("effect", "") in ("", "NoExecute")
            for t in present
        ):
            continue
        added.append(
            {
                "key": taint,
                "operator": "Exists",
                "effect": "NoExecute",
                "tolerationSeconds": DEFAULT_TOLERATION_SECONDS,
            }
        )
    if added:
        spec["tolerations"] = present + added


def pod_qos_class(spec: Obj) -> str:
    """The Pod's QoS class (Guaranteed, Burstable, BestEffort) from its cpu/memory resources."""
    requests: dict[str, Any] = {}
    limits: dict[str, Any] = {}
    guaranteed = True
    for field in ("containers", "initContainers"):
        for container in _items(spec, field):
            resources = container.get("resources") or {}
            for name, value in (resources.get("requests") or {}).items():
                amount = _amount(value)
                if name in ("cpu", "memory") and amount:
                    requests[name] = requests.get(name, 0) + amount
            found = set()
            for name, value in (resources.get("limits") or {}).items():
                amount = _amount(value)
                if name in ("cpu", "memory") and amount:
                    limits[name] = limits.get(name, 0) + amount
                    found.add(name)
            if found != {"cpu", "memory"}:
                guaranteed = False
    if not requests and not limits:
        return "BestEffort"
    same = requests.keys() == limits.keys() and all(requests[n] == limits[n] for n in requests)
    if guaranteed and same:
        return "Guaranteed"
    return "Burstable"


# --- workloads -------------------------------------------------------------------------------


def _default_deployment(deployment: Obj) -> None:
    spec = _child(deployment, "spec")
    if spec.get("replicas") is None:
        spec["replicas"] = 1
    strategy = _child(spec, "strategy")
    if not strategy.get("type"):
        strategy["type"] = "RollingUpdate"
    if strategy["type"] == "RollingUpdate":
        rolling = _child(strategy, "rollingUpdate")
        if rolling.get("maxUnavailable") is None:
            rolling["maxUnavailable"] = "25%"
        if rolling.get("maxSurge") is None:
            rolling["maxSurge"] = "25%"
    if spec.get("revisionHistoryLimit") is None:
        spec["revisionHistoryLimit"] = 10
    if spec.get("progressDeadlineSeconds") is None:
        spec["progressDeadlineSeconds"] = 600
    _default_pod_template(deployment)


def _default_replica_set(replica_set: Obj) -> None:
    spec = _child(replica_set, "spec")
    if spec.get("replicas") is None:
        spec["replicas"] = 1
    _default_pod_template(replica_set)


def _default_daemon_set(daemon_set: Obj) -> None:
    spec = _child(daemon_set, "spec")
    strategy = _child(spec, "updateStrategy")
    if not strategy.get("type"):
        strategy["type"] = "RollingUpdate"
    if strategy["type"] == "RollingUpdate":
        rolling = _child(strategy, "rollingUpdate")
        if rolling.get("maxUnavailable") is None:
            rolling["maxUnavailable"] = 1
        if rolling.get("maxSurge") is None:
            rolling["maxSurge"] = 0
    if spec.get("revisionHistoryLimit") is None:
        spec["revisionHistoryLimit"] = 10
    _default_pod_template(daemon_set)


def _default_job(job: Obj) -> None:
    spec = _child(job, "spec")
    if spec.get("completions") is None and spec.get("parallelism") is None:
        spec["completions"] = 1
        spec["parallelism"] = 1
    if spec.get("parallelism") is None:
        spec["parallelism"] = 1
    if spec.get("backoffLimit") is None:
        spec["backoffLimit"] = 2147483647 if spec.get("backoffLimitPerIndex") is not None else 6
    meta = _child(job, "metadata")
    template = _child(spec, "template")
    template_labels = (template.get("metadata") or {}).get("labels")
    if template_labels and not meta.get("labels"):
        meta["labels"] = dict(template_labels)
    if not spec.get("completionMode"):
        spec["completionMode"] = "NonIndexed"
    if spec.get("suspend") is None:
        spec["suspend"] = False
    if not spec.get("podReplacementPolicy"):
        failure_policy = spec.get("podFailurePolicy")
        spec["podReplacementPolicy"] = "Failed" if failure_policy else "TerminatingOrFailed"
        for rule in _items(failure_policy or {}, "rules"):
            for pattern in _items(rule, "onPodConditions"):
                pattern.setdefault("status", "True")
    if not spec.get("manualSelector") and meta.get("uid"):
        _generate_job_selector(job)
    _default_pod_template(job)


def _default_cron_job(cron_job: Obj) -> None:
    spec = _child(cron_job, "spec")
    for key, value in (
        ("concurrencyPolicy", "Allow"),
        ("suspend", False),
        ("successfulJobsHistoryLimit", 3),
        ("failedJobsHistoryLimit", 1),
    ):
        if spec.get(key) is None:
            spec[key] = value
    _default_pod_template(_child(spec, "jobTemplate"))  # jobTemplate.spec.template


def _generate_job_selector(job: Obj) -> None:
    """Label the template with the Job's name and uid and select on the uid, as the API
    server does for every Job that does not ask for a manual selector."""
    meta = job["metadata"]
    template_meta = _child(_child(job["spec"], "template"), "metadata")
    labels = _child(template_meta, "labels")
    for key in JOB_NAME_LABELS:
        labels.setdefault(key, str(meta.get("name") or ""))
    for key in CONTROLLER_UID_LABELS:
        labels.setdefault(key, str(meta["uid"]))
    selector = _child(job["spec"], "selector")
    _child(selector, "matchLabels").setdefault(CONTROLLER_UID_LABELS[1], str(meta["uid"]))


# --- core objects ----------------------------------------------------------------------------


def _default_service(service: Obj) -> None:
    spec = _child(service, "spec")
    if not spec.get("sessionAffinity"):
        spec["sessionAffinity"] = "None"
    if spec["sessionAffinity"] == "None":
        spec.pop("sessionAffinityConfig", None)
    if not spec.get("type"):
        spec["type"] = "ClusterIP"
    kind = spec["type"]
    for port in _items(spec, "ports"):
        if not port.get("protocol"):
            port["protocol"] = "TCP"
        if port.get("targetPort") in (None, 0, ""):
            port["targetPort"] = port.get("port")
    externally_accessible = kind in ("LoadBalancer", "NodePort") or (
        kind == "ClusterIP" and bool(spec.get("externalIPs"))
    )
    if externally_accessible and not spec.get("externalTrafficPolicy"):
        spec["externalTrafficPolicy"] = "Cluster"
    if spec.get("internalTrafficPolicy") is None and kind in (
        "NodePort",
        "LoadBalancer",
        "ClusterIP",
    ):
        spec["internalTrafficPolicy"] = "Cluster"
    if kind == "LoadBalancer" and spec.get("allocateLoadBalancerNodePorts") is None:
        spec["allocateLoadBalancerNodePorts"] = True
    if kind != "ExternalName":
        if not spec.get("ipFamilyPolicy"):
            spec["ipFamilyPolicy"] = "SingleStack"
        if not spec.get("ipFamilies"):
            spec["ipFamilies"] = [_ip_family(str(spec.get("clusterIP") or ""))]
        cluster_ip = spec.get("clusterIP")
        if cluster_ip and not spec.get("clusterIPs"):
            spec["clusterIPs"] = [cluster_ip]
    status = _child(service, "status")
    status.setdefault("loadBalancer", {})


def _carry_service_allocations(service: Obj, old: Obj) -> None:
    spec = _child(service, "spec")
    old_spec = old.get("spec") or {}
    if spec.get("type", old_spec.get("type")) == "ExternalName":
        return
    for key in ("clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy", "healthCheckNodePort"):
        if not spec.get(key) and old_spec.get(key):
            spec[key] = old_spec[key]
    old_ports = {
        (p.get("port"), p.get("protocol") or "TCP"): p.get("nodePort")
        for p in _items(old_spec, "ports")
    }
    if spec.get("type") in ("NodePort", "LoadBalancer"):
        for port in _items(spec, "ports"):
            node_port = old_ports.get((port.get("port"), port.get("protocol") or "TCP"))
            if not port.get("nodePort") and node_port:
                port["nodePort"] = node_port


def _ip_family(address: str) -> str:
    try:
        return "IPv6" if ipaddress.ip_address(address).version == 6 else "IPv4"
    except ValueError:
        return "IPv4"


def _default_secret(secret: Obj) -> None:
    if not secret.get("type"):
        secret["type"] = "Opaque"
    # stringData is write-only: its entries overwrite data (base64-encoded) and it is not kept.
    string_data = secret.pop("stringData", None)
    if isinstance(string_data, dict) and string_data:
        data = _child(secret, "data")
        for key, value in string_data.items():
            data[key] = base64.b64encode(str(value).encode()).decode()


def _default_namespace(namespace: Obj) -> None:
    meta = _child(namespace, "metadata")
    if meta.get("name"):
        _child(meta, "labels")["kubernetes.io/metadata.name"] = meta["name"]
    spec = _child(namespace, "spec")
    # The "kubernetes" finalizer is set once, at creation; the namespace controller removes it
    # while deleting, so it must not come back then.
    if "finalizers" not in spec and not meta.get("deletionTimestamp"):
        spec["finalizers"] = ["kubernetes"]
    status = _child(namespace, "status")
    if not status.get("phase"):
        status["phase"] = "Active"


def _default_node(node: Obj) -> None:
    # v1 keeps podCIDR (the primary) and podCIDRs in step, as its conversion does.
    spec = node.get("spec")
    if isinstance(spec, dict):
        if spec.get("podCIDR") and not spec.get("podCIDRs"):
            spec["podCIDRs"] = [spec["podCIDR"]]
        elif spec.get("podCIDRs") and not spec.get("podCIDR"):
            spec["podCIDR"] = spec["podCIDRs"][0]
    status = node.get("status")
    if not isinstance(status, dict):
        return
    for key in ("capacity", "allocatable"):
        if isinstance(status.get(key), dict):
            _round_resource_list(status[key])
    if status.get("allocatable") is None and isinstance(status.get("capacity"), dict):
        status["allocatable"] = dict(status["capacity"])


def _default_event(event: Obj) -> None:
    # Go's core/v1 Event has no ``omitempty`` on these two: kube-apiserver always sends them.
    for key in ("reportingComponent", "reportingInstance"):
        if event.get(key) is None:
            event[key] = ""


def _default_endpoints(endpoints: Obj) -> None:
    for subset in _items(endpoints, "subsets"):
        for port in _items(subset, "ports"):
            if not port.get("protocol"):
                port["protocol"] = "TCP"


_DEFAULTERS: dict[str, Callable[[Obj], None]] = {
    "Pod": _default_pod,
    "Deployment": _default_deployment,
    "ReplicaSet": _default_replica_set,
    "DaemonSet": _default_daemon_set,
    "Job": _default_job,
    "CronJob": _default_cron_job,
    "Service": _default_service,
    "Secret": _default_secret,
    "Namespace": _default_namespace,
    "Node": _default_node,
    "Endpoints": _default_endpoints,
    "Event": _default_event,
}


# --- helpers ---------------------------------------------------------------------------------

_DOMAIN_COMPONENT = re.compile(r"^[a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?$")
_PATH_COMPONENT = re.compile(r"^[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*$")
_TAG = re.compile(r"^[\w][\w.-]{0,127}$")


def image_tag(image: str) -> str:
    """The tag a container runtime would pull for ``image`` (``latest`` when none is given),
    or "" for a digest reference or a name that is not a valid image reference."""
    name, _, digest = image.partition("@")
    last_slash = name.rfind("/")
    tag = ""
    if ":" in name[last_slash + 1 :]:
        name, _, tag = name.rpartition(":")
    if not _valid_repository(name) or (tag and not _TAG.match(tag)):
        return ""
    if digest:
        return tag
    return tag or "latest"


def _valid_repository(name: str) -> bool:
    if not name:
        return False
    components = name.split("/")
    first = components[0]
    if len(components) > 1 and ("." in first or ":" in first or first == "localhost"):
        host, _, port = first.partition(":")
        if not all(_DOMAIN_COMPONENT.match(p) for p in host.split(".")):
            return False
        if port and not port.isdigit():
            return False
        components = components[1:]
    return all(_PATH_COMPONENT.match(c) for c in components)


def _round_resource_list(resources: Obj) -> None:
    for name, value in list(resources.items()):
        try:
            resources[name] = str(Quantity.parse(value).round_up(-3))
        except QuantityError:
            continue  # validation reports it


def _amount(value: Any) -> Any:
    try:
        return Quantity.parse(value).value
    except QuantityError:
        return 0


def _child(obj: Obj, key: str) -> Obj:
    value = obj.get(key)
    if not isinstance(value, dict):
        value = obj[key] = {}
    return value


def _items(obj: Obj, key: str) -> list[Obj]:
    value = obj.get(key)
    if not isinstance(value, list):
        return []
    return [item for item in value if isinstance(item, dict)]
