"""Table printers for workloads, Services, Endpoints, Events and ControllerRevisions.

Cells follow the API server's printers: a Deployment's READY is ``ready/desired``, a Job's
COMPLETIONS ``succeeded/completions`` and its DURATION the time from start to completion, a
Service's PORT(S) ``port[:nodePort]/protocol``, an Event's OBJECT ``kind/name`` in lower case.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from k3py.cluster.api.printing import (
    AGE,
    NAME,
    Cells,
    Column,
    Obj,
    age,
    as_dict,
    as_int,
    as_list,
    controller_of,
    human_duration,
    name_of,
    object_age,
    parse_time,
    pod_template_columns,
    template_containers,
)
from k3py.cluster.api.selectors import format_label_selector, format_labels

# --- workloads ----------------------------------------------------------------------------------

DEPLOYMENT_COLUMNS = [
    NAME,
    Column("Ready", description="Number of the pod with ready state"),
    Column(
        "Up-to-date",
        description="Pods of this deployment that have the desired template spec.",
    ),
    Column(
        "Available",
        description="Pods of this deployment ready for at least minReadySeconds.",
    ),
    *pod_template_columns("Label selector for pods."),
]


def print_deployment(obj: Obj, now: datetime) -> Cells:
    spec, status = as_dict(obj.get("spec")), as_dict(obj.get("status"))
    names, images = template_containers(obj)
    selector = format_label_selector(as_dict(spec.get("selector")) if "selector" in spec else None)
    cells = [
        name_of(obj),
        f"{as_int(status.get('readyReplicas'))}/{as_int(spec.get('replicas'))}",
        as_int(status.get("updatedReplicas")),
        as_int(status.get("availableReplicas")),
        object_age(obj, now),
        names,
        images,
        {"<none>": "", "<error>": "<invalid>"}.get(selector, selector),
    ]
    return cells, []


REPLICA_SET_COLUMNS = [
    NAME,
    Column("Desired", "integer", "Replicas is the number of desired replicas."),
    Column("Current", "integer", "Replicas is the most recently observed number of replicas."),
    Column(
        "Ready",
        "integer",
        "readyReplicas is the number of pods targeted by this ReplicaSet with a Ready Condition.",
    ),
    *pod_template_columns("Selector is a label query over pods."),
]


def print_replica_set(obj: Obj, now: datetime) -> Cells:
    spec, status = as_dict(obj.get("spec")), as_dict(obj.get("status"))
    names, images = template_containers(obj)
    cells = [
        name_of(obj),
        as_int(spec.get("replicas")),
        as_int(status.get("replicas")),
        as_int(status.get("readyReplicas")),
        object_age(obj, now),
        names,
        images,
        format_label_selector(spec.get("selector")),
    ]
    return cells, []


DAEMON_SET_COLUMNS = [
    NAME,
    Column(
        "Desired", "integer", "The total number of nodes that should be running the daemon pod."
    ),
    Column("Current", "integer", "The number of nodes that are running at least 1 daemon pod."),
    Column(
        "Ready",
        "integer",
        "Nodes that run a ready daemon pod.",
    ),
    Column(
        "Up-to-date", "integer", "The total number of nodes that are running updated daemon pod"
    ),
    Column(
        "Available",
        "integer",
        "Nodes that run an available daemon pod.",
    ),
    Column(
        "Node Selector",
        description="NodeSelector is a selector which must be true for the pod to fit on a node.",
    ),
    *pod_template_columns("A label query over pods that are managed by the daemon set."),
]


def print_daemon_set(obj: Obj, now: datetime) -> Cells:
    spec, status = as_dict(obj.get("spec")), as_dict(obj.get("status"))
    names, images = template_containers(obj)
    node_selector = as_dict(as_dict(as_dict(spec.get("template")).get("spec")).get("nodeSelector"))
    cells = [
        name_of(obj),
        as_int(status.get("desiredNumberScheduled")),
        as_int(status.get("currentNumberScheduled")),
        as_int(status.get("numberReady")),
        as_int(status.get("updatedNumberScheduled")),
        as_int(status.get("numberAvailable")),
        format_labels({str(k): str(v) for k, v in node_selector.items()}),
        object_age(obj, now),
        names,
        images,
        format_label_selector(spec.get("selector")),
    ]
    return cells, []


JOB_COLUMNS = [
    NAME,
    Column("Status", description="Status of the job."),
    Column("Completions", description="The number of pods which reached phase Succeeded."),
    Column("Duration", description="Time required to complete the job."),
    *pod_template_columns("A label query over pods that should match the pod count."),
]


def print_job(obj: Obj, now: datetime) -> Cells:
    spec, status, meta = (
        as_dict(obj.get("spec")),
        as_dict(obj.get("status")),
        as_dict(obj.get("metadata")),
    )
    succeeded = as_int(status.get("succeeded"))
    if spec.get("completions") is not None:
        completions = f"{succeeded}/{as_int(spec.get('completions'))}"
    elif as_int(spec.get("parallelism")) > 1:
        completions = f"{succeeded}/1 of {as_int(spec.get('parallelism'))}"
    else:
        completions = f"{succeeded}/1"
    start, end = parse_time(status.get("startTime")), parse_time(status.get("completionTime"))
    duration = ""
    if start is not None:
        duration = human_duration(((end or now) - start).total_seconds())
    conditions = [as_dict(c) for c in as_list(status.get("conditions"))]

    def has(kind: str) -> bool:
        for condition in conditions:
            if condition.get("type") == kind:
                return condition.get("status") == "True"
        return False

    if has("Complete"):
        state = "Complete"
    elif has("Failed"):
        state = "Failed"
    elif meta.get("deletionTimestamp"):
        state = "Terminating"
    elif has("Suspended"):
        state = "Suspended"
    elif has("FailureTarget"):
        state = "FailureTarget"
    else:
        state = "Running"
    names, images = template_containers(obj)
    cells = [
        name_of(obj),
        state,
        completions,
        duration,
        object_age(obj, now),
        names,
        images,
        format_label_selector(spec.get("selector")),
    ]
    return cells, []


# --- services and the rest --------------------------------------------------------------------

SERVICE_COLUMNS = [
    NAME,
    Column("Type", description="type determines how the Service is exposed."),
    Column("Cluster-IP", description="clusterIP is the IP address of the service."),
    Column(
        "External-IP",
        description="IP addresses on which nodes also accept traffic for this service.",
    ),
    Column("Port(s)", description="The list of ports that are exposed by this service."),
    AGE,
    Column(
        "Selector",
        description="Route service traffic to pods with labels matching this selector.",
        priority=1,
    ),
]


def print_service(obj: Obj, now: datetime) -> Cells:
    spec, status = as_dict(obj.get("spec")), as_dict(obj.get("status"))
    cluster_ips = as_list(spec.get("clusterIPs"))
    cluster_ip = str(cluster_ips[0]) if cluster_ips else str(spec.get("clusterIP") or "")
    kind = str(spec.get("type") or "")
    external_ips = [str(ip) for ip in as_list(spec.get("externalIPs"))]
    if kind in ("ClusterIP", "NodePort"):
        external = ",".join(external_ips) or "<none>"
    elif kind == "LoadBalancer":
        ingress = []
        for entry in (
            as_dict(i) for i in as_list(as_dict(status.get("loadBalancer")).get("ingress"))
        ):
            value = entry.get("ip") or entry.get("hostname")
            if value and value not in ingress:
                ingress.append(str(value))
        external = ",".join(ingress + external_ips) or "<pending>"
    elif kind == "ExternalName":
        external = str(spec.get("externalName") or "")
    else:
        external = "<unknown>"
    ports = []
    for port in (as_dict(p) for p in as_list(spec.get("ports"))):
        protocol = port.get("protocol") or ""
        if as_int(port.get("nodePort")) > 0:
            ports.append(f"{port.get('port')}:{port.get('nodePort')}/{protocol}")
        else:
            ports.append(f"{port.get('port')}/{protocol}")
    selector = as_dict(spec.get("selector"))
    cells = [
        name_of(obj),
        kind,
        cluster_ip or "<none>",
        external,
        ",".join(ports) or "<none>",
        object_age(obj, now),
        format_labels({str(k): str(v) for k, v in selector.items()}),
    ]
    return cells, []


def print_endpoints(obj: Obj, now: datetime) -> Cells:
    subsets = [as_dict(s) for s in as_list(obj.get("subsets"))]
    shown: list[str] = []
    count = 0
    for subset in subsets:
        addresses = [str(as_dict(a).get("ip") or "") for a in as_list(subset.get("addresses"))]
        ports = [as_dict(p) for p in as_list(subset.get("ports"))]
        if not ports:
            # Headless services may have endpoints without ports.
            count += len(addresses)
            shown.extend(addresses[: max(0, 3 - len(shown))])
        for port in ports:
            count += len(addresses)
            for ip in addresses:
                if len(shown) < 3:
                    host = f"[{ip}]" if ":" in ip else ip
                    shown.append(f"{host}:{port.get('port')}")
    text = ",".join(shown)
    if count > 3:
        text = f"{text} + {count - 3} more..."
    return [name_of(obj), text or "<none>", object_age(obj, now)], []


def print_event(obj: Obj, now: datetime) -> Cells:
    first = obj.get("firstTimestamp")
    first_seen = age(first, now) if first else age(obj.get("eventTime"), now)
    last = obj.get("lastTimestamp")
    last_seen = age(last, now) if last else first_seen
    count = as_int(obj.get("count"))
    series = obj.get("series")
    if isinstance(series, Mapping):
        last_seen = age(series.get("lastObservedTime"), now)
        count = as_int(series.get("count"))
    elif count == 0:
        count = 1
    involved = as_dict(obj.get("involvedObject"))
    kind = str(involved.get("kind") or "").lower()
    target = f"{kind}/{involved['name']}" if involved.get("name") else kind
    source = as_dict(obj.get("source"))
    component = str(source.get("component") or obj.get("reportingComponent") or "")
    host = str(source.get("host") or obj.get("reportingInstance") or "")
    cells = [
        last_seen,
        str(obj.get("type") or ""),
        str(obj.get("reason") or ""),
        target,
        str(involved.get("fieldPath") or ""),
        f"{component}, {host}" if host else component,
        str(obj.get("message") or "").strip(),
        first_seen,
        count,
        name_of(obj),
    ]
    return cells, []


EVENT_COLUMNS = [
    Column(
        "Last Seen",
        description="The time at which the most recent occurrence of this event was recorded.",
    ),
    Column(
        "Type",
        description="Type of this event (Normal, Warning), new types could be added in the future",
    ),
    Column(
        "Reason",
        description="Why the object entered its current status.",
    ),
    Column("Object", description="The object that this event is about."),
    Column(
        "Subobject",
        description="The part of the object the event is about.",
        priority=1,
    ),
    Column("Source", description="The component reporting this event.", priority=1),
    Column("Message", description="A human-readable description of the status of this operation."),
    Column("First Seen", description="The time at which the event was first recorded.", priority=1),
    Column("Count", description="The number of times this event has occurred.", priority=1),
    Column(
        "Name", format="name", description="Name must be unique within a namespace.", priority=1
    ),
]


ENDPOINTS_COLUMNS = [
    NAME,
    Column("Endpoints", description="The set of all endpoints is the union of all subsets."),
    AGE,
]
CONTROLLER_REVISION_COLUMNS = [
    NAME,
    Column("Controller", description="Controller of the object"),
    Column("Revision", description="The revision of the state represented by Data."),
    AGE,
]


def print_controller_revision(obj: Obj, now: datetime) -> Cells:
    cells = [name_of(obj), controller_of(obj), as_int(obj.get("revision")), object_age(obj, now)]
    return cells, []
