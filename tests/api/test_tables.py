"""Table responses carry kubectl's columns and cells for each served kind."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from k3py.cluster.api.status import ApiError
from k3py.cluster.api.tables import human_duration, to_table
from tests.api.kinds import info

NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)


def _ago(**delta: float) -> str:
    return (NOW - timedelta(**delta)).strftime("%Y-%m-%dT%H:%M:%SZ")


def _meta(name: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "namespace": "default", "creationTimestamp": _ago(minutes=5), **extra}


def _table(kind: str, *objects: dict[str, Any], include: str = "None") -> dict[str, Any]:
    return to_table(info(kind), list(objects), now=NOW, include_object=include)


def _header(table: dict[str, Any]) -> list[tuple[str, int]]:
    return [(c["name"], c["priority"]) for c in table["columnDefinitions"]]


def _cells(table: dict[str, Any]) -> list[list[Any]]:
    return [row["cells"] for row in table["rows"]]


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (-5, "<invalid>"),
        (-1, "0s"),
        (0, "0s"),
        (5, "5s"),
        (119, "119s"),
        (120, "2m"),
        (182, "3m2s"),
        (600, "10m"),
        (3 * 3600 - 1, "179m"),
        (3 * 3600, "3h"),
        (3 * 3600 + 300, "3h5m"),
        (47 * 3600, "47h"),
        (51 * 3600, "2d3h"),
        (8 * 86400, "8d"),
        (2 * 365 * 86400 + 15 * 86400, "2y15d"),
        (9 * 365 * 86400, "9y"),
    ],
)
def test_human_duration(seconds: float, text: str) -> None:
    assert human_duration(seconds) == text


def _running_pod() -> dict[str, Any]:
    return {
        "metadata": _meta("web-1"),
        "spec": {"nodeName": "node-1", "containers": [{"name": "web"}, {"name": "log"}]},
        "status": {
            "phase": "Running",
            "podIP": "10.42.0.5",
            "podIPs": [{"ip": "10.42.0.5"}],
            "conditions": [{"type": "Ready", "status": "True"}],
            "containerStatuses": [
                {"name": "web", "ready": True, "restartCount": 0, "state": {"running": {}}},
                {"name": "log", "ready": True, "restartCount": 0, "state": {"running": {}}},
            ],
        },
    }


def test_pod_columns_and_running_row() -> None:
    table = _table("Pod", _running_pod())
    assert table["kind"] == "Table"
    assert table["apiVersion"] == "meta.k8s.io/v1"
    assert _header(table) == [
        ("Name", 0),
        ("Ready", 0),
        ("Status", 0),
        ("Restarts", 0),
        ("Age", 0),
        ("IP", 1),
        ("Node", 1),
        ("Nominated Node", 1),
        ("Readiness Gates", 1),
    ]
    assert _cells(table) == [
        ["web-1", "2/2", "Running", "0", "5m", "10.42.0.5", "node-1", "<none>", "<none>"]
    ]
    assert "object" not in table["rows"][0]


def _pod(status: dict[str, Any], **meta: Any) -> dict[str, Any]:
    return {
        "metadata": _meta("p", **meta),
        "spec": {"containers": [{"name": "c"}]},
        "status": status,
    }


@pytest.mark.parametrize(
    ("status", "meta", "ready", "reason", "restarts"),
    [
        ({}, {}, "0/1", "", "0"),
        ({"phase": "Pending"}, {}, "0/1", "Pending", "0"),
        (
            {
                "phase": "Pending",
                "containerStatuses": [
                    {"name": "c", "state": {"waiting": {"reason": "ContainerCreating"}}}
                ],
            },
            {},
            "0/1",
            "ContainerCreating",
            "0",
        ),
        (
            {
                "phase": "Running",
                "containerStatuses": [
                    {
                        "name": "c",
                        "restartCount": 5,
                        "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                        "lastState": {
                            "terminated": {"exitCode": 1, "finishedAt": _ago(seconds=130)}
                        },
                    }
                ],
            },
            {},
            "0/1",
            "CrashLoopBackOff",
            "5 (2m10s ago)",
        ),
        (
            {
                "phase": "Succeeded",
                "containerStatuses": [
                    {"name": "c", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}
                ],
            },
            {},
            "0/1",
            "Completed",
            "0",
        ),
        (
            {
                "phase": "Failed",
                "containerStatuses": [{"name": "c", "state": {"terminated": {"exitCode": 137}}}],
            },
            {},
            "0/1",
            "ExitCode:137",
            "0",
        ),
        (
            {
                "phase": "Running",
                "containerStatuses": [{"name": "c", "ready": True, "state": {"running": {}}}],
            },
            {"deletionTimestamp": _ago(seconds=3)},
            "1/1",
            "Terminating",
            "0",
        ),
        ({"phase": "Failed", "reason": "Evicted"}, {}, "0/1", "Evicted", "0"),
    ],
)
def test_pod_status_column(
    status: dict[str, Any], meta: dict[str, Any], ready: str, reason: str, restarts: str
) -> None:
    (cells,) = _cells(_table("Pod", _pod(status, **meta)))
    assert cells[1:4] == [ready, reason, restarts]


def test_pod_init_containers_and_completed_condition() -> None:
    pod = {
        "metadata": _meta("p"),
        "spec": {"initContainers": [{"name": "a"}, {"name": "b"}], "containers": [{"name": "c"}]},
        "status": {
            "phase": "Pending",
            "initContainerStatuses": [
                {"name": "a", "state": {"terminated": {"exitCode": 0}}},
                {"name": "b", "state": {"running": {}}},
            ],
        },
    }
    (cells,) = _cells(_table("Pod", pod))
    assert cells[2] == "Init:1/2"
    pod["status"]["initContainerStatuses"][1]["state"] = {"waiting": {"reason": "CrashLoopBackOff"}}
    assert _cells(_table("Pod", pod))[0][2] == "Init:CrashLoopBackOff"
    done = _pod({"phase": "Succeeded"})
    row = _table("Pod", done)["rows"][0]
    assert row["conditions"] == [
        {
            "type": "Completed",
            "status": "True",
            "reason": "Succeeded",
            "message": "The pod has completed successfully.",
        }
    ]


def test_include_object() -> None:
    pod = _running_pod()
    meta_row = _table("Pod", pod, include="Metadata")["rows"][0]
    assert meta_row["object"] == {
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": pod["metadata"],
    }
    full = _table("Pod", pod, include="Object")["rows"][0]["object"]
    assert full["kind"] == "Pod"
    assert full["apiVersion"] == "v1"
    assert full["status"] == pod["status"]
    with pytest.raises(ApiError) as err:
        _table("Pod", pod, include="Everything")
    assert err.value.code == 400


def test_nodes() -> None:
    node = {
        "metadata": {
            "name": "pi-1",
            "creationTimestamp": _ago(days=2, hours=3),
            "labels": {
                "node-role.kubernetes.io/control-plane": "",
                "node-role.kubernetes.io/master": "",
            },
        },
        "spec": {"unschedulable": True},
        "status": {
            "conditions": [{"type": "Ready", "status": "True"}],
            "addresses": [
                {"type": "InternalIP", "address": "192.0.2.10"},
                {"type": "Hostname", "address": "pi-1"},
            ],
            "nodeInfo": {
                "kubeletVersion": "v1.32.0+k3py",
                "osImage": "Debian GNU/Linux 13 (trixie)",
                "kernelVersion": "6.12.0-1-arm64",
                "containerRuntimeVersion": "docker://20.10.24",
            },
        },
    }
    table = _table("Node", node, {"metadata": {"name": "new"}})
    assert [name for name, _ in _header(table)] == [
        "Name",
        "Status",
        "Roles",
        "Age",
        "Version",
        "Internal-IP",
        "External-IP",
        "OS-Image",
        "Kernel-Version",
        "Container-Runtime",
    ]
    assert _cells(table) == [
        [
            "pi-1",
            "Ready,SchedulingDisabled",
            "control-plane,master",
            "2d3h",
            "v1.32.0+k3py",
            "192.0.2.10",
            "<none>",
            "Debian GNU/Linux 13 (trixie)",
            "6.12.0-1-arm64",
            "docker://20.10.24",
        ],
        [
            "new",
            "Unknown",
            "<none>",
            "<unknown>",
            "",
            "<none>",
            "<none>",
            "<unknown>",
            "<unknown>",
            "<unknown>",
        ],
    ]


def _template(*images: str) -> dict[str, Any]:
    return {
        "spec": {"containers": [{"name": f"c{i}", "image": img} for i, img in enumerate(images)]}
    }


def test_deployments_replica_sets_daemon_sets() -> None:
    deployment = {
        "metadata": _meta("web"),
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": "web"}},
            "template": _template("nginx", "envoy"),
        },
        "status": {"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2},
    }
    table = _table("Deployment", deployment)
    assert [n for n, _ in _header(table)] == [
        "Name",
        "Ready",
        "Up-to-date",
        "Available",
        "Age",
        "Containers",
        "Images",
        "Selector",
    ]
    assert _cells(table) == [["web", "2/3", 3, 2, "5m", "c0,c1", "nginx,envoy", "app=web"]]
    rs = {
        "metadata": _meta("web-5d8f"),
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": "web", "pod-template-hash": "5d8f"}},
            "template": _template("nginx"),
        },
        "status": {"replicas": 3, "readyReplicas": 1},
    }
    assert _cells(_table("ReplicaSet", rs)) == [
        ["web-5d8f", 3, 3, 1, "5m", "c0", "nginx", "app=web,pod-template-hash=5d8f"]
    ]
    ds = {
        "metadata": _meta("agent"),
        "spec": {
            "selector": {"matchLabels": {"app": "agent"}},
            "template": {
                "spec": {
                    "nodeSelector": {"kubernetes.io/os": "linux"},
                    "containers": [{"name": "a", "image": "agent:1"}],
                }
            },
        },
        "status": {
            "desiredNumberScheduled": 3,
            "currentNumberScheduled": 3,
            "numberReady": 2,
            "updatedNumberScheduled": 3,
            "numberAvailable": 2,
        },
    }
    table = _table("DaemonSet", ds)
    assert [n for n, _ in _header(table)][:8] == [
        "Name",
        "Desired",
        "Current",
        "Ready",
        "Up-to-date",
        "Available",
        "Node Selector",
        "Age",
    ]
    assert _cells(table) == [
        ["agent", 3, 3, 2, 3, 2, "kubernetes.io/os=linux", "5m", "a", "agent:1", "app=agent"]
    ]


def test_jobs() -> None:
    job = {
        "metadata": _meta("pi"),
        "spec": {
            "completions": 1,
            "parallelism": 1,
            "selector": {"matchLabels": {"batch.kubernetes.io/controller-uid": "u"}},
            "template": _template("perl"),
        },
        "status": {
            "succeeded": 1,
            "startTime": _ago(minutes=4),
            "completionTime": _ago(minutes=3, seconds=55),
            "conditions": [{"type": "Complete", "status": "True"}],
        },
    }
    table = _table("Job", job)
    assert [n for n, _ in _header(table)][:5] == [
        "Name",
        "Status",
        "Completions",
        "Duration",
        "Age",
    ]
    assert _cells(table)[0][:5] == ["pi", "Complete", "1/1", "5s", "5m"]
    running = {
        "metadata": _meta("p2"),
        "spec": {"parallelism": 3},
        "status": {"startTime": _ago(seconds=30)},
    }
    assert _cells(_table("Job", running))[0][:4] == ["p2", "Running", "0/1 of 3", "30s"]


def test_services_and_endpoints() -> None:
    services = [
        {
            "metadata": _meta("web"),
            "spec": {
                "type": "ClusterIP",
                "clusterIP": "10.43.0.20",
                "clusterIPs": ["10.43.0.20"],
                "selector": {"app": "web"},
                "ports": [{"port": 80, "protocol": "TCP"}, {"port": 443, "protocol": "TCP"}],
            },
        },
        {
            "metadata": _meta("np"),
            "spec": {
                "type": "NodePort",
                "clusterIPs": ["10.43.0.21"],
                "ports": [{"port": 80, "nodePort": 30080, "protocol": "TCP"}],
            },
        },
        {
            "metadata": _meta("lb"),
            "spec": {
                "type": "LoadBalancer",
                "clusterIPs": ["10.43.0.22"],
                "ports": [{"port": 53, "nodePort": 31053, "protocol": "UDP"}],
            },
            "status": {"loadBalancer": {}},
        },
        {"metadata": _meta("ext"), "spec": {"type": "ExternalName", "externalName": "db.example"}},
        {
            "metadata": _meta("headless"),
            "spec": {"type": "ClusterIP", "clusterIP": "None", "clusterIPs": ["None"]},
        },
    ]
    table = _table("Service", *services)
    assert _header(table) == [
        ("Name", 0),
        ("Type", 0),
        ("Cluster-IP", 0),
        ("External-IP", 0),
        ("Port(s)", 0),
        ("Age", 0),
        ("Selector", 1),
    ]
    assert _cells(table) == [
        ["web", "ClusterIP", "10.43.0.20", "<none>", "80/TCP,443/TCP", "5m", "app=web"],
        ["np", "NodePort", "10.43.0.21", "<none>", "80:30080/TCP", "5m", "<none>"],
        ["lb", "LoadBalancer", "10.43.0.22", "<pending>", "53:31053/UDP", "5m", "<none>"],
        ["ext", "ExternalName", "<none>", "db.example", "<none>", "5m", "<none>"],
        ["headless", "ClusterIP", "None", "<none>", "<none>", "5m", "<none>"],
    ]
    endpoints = {
        "metadata": _meta("web"),
        "subsets": [
            {"addresses": [{"ip": f"10.42.0.{i}"} for i in range(5, 9)], "ports": [{"port": 80}]}
        ],
    }
    assert _cells(_table("Endpoints", endpoints)) == [
        ["web", "10.42.0.5:80,10.42.0.6:80,10.42.0.7:80 + 1 more...", "5m"]
    ]
    assert _cells(_table("Endpoints", {"metadata": _meta("none")})) == [["none", "<none>", "5m"]]


def test_simple_kinds() -> None:
    assert _cells(
        _table("Namespace", {"metadata": _meta("apps"), "status": {"phase": "Active"}})
    ) == [["apps", "Active", "5m"]]
    assert _cells(
        _table(
            "ConfigMap",
            {"metadata": _meta("c"), "data": {"a": "1", "b": "2"}, "binaryData": {"c": "eA=="}},
        )
    ) == [["c", 3, "5m"]]
    assert _cells(
        _table("Secret", {"metadata": _meta("s"), "type": "Opaque", "data": {"a": "eA=="}})
    ) == [["s", "Opaque", 1, "5m"]]
    assert _cells(_table("ServiceAccount", {"metadata": _meta("default")})) == [
        ["default", 0, "5m"]
    ]
    assert _cells(
        _table("Lease", {"metadata": _meta("node-1"), "spec": {"holderIdentity": "node-1"}})
    ) == [["node-1", "node-1", "5m"]]
    assert [n for n, _ in _header(_table("Binding"))] == ["Name", "Age"]
    revision = {
        "metadata": _meta(
            "agent-1",
            ownerReferences=[
                {"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "agent", "controller": True}
            ],
        ),
        "revision": 1,
    }
    assert _cells(_table("ControllerRevision", revision)) == [
        ["agent-1", "daemonset.apps/agent", 1, "5m"]
    ]


def test_events() -> None:
    event = {
        "metadata": _meta("web-1.17c"),
        "involvedObject": {
            "kind": "Pod",
            "name": "web-1",
            "namespace": "default",
            "fieldPath": "spec.containers{web}",
        },
        "reason": "Pulled",
        "message": 'Successfully pulled image "nginx"\n',
        "type": "Normal",
        "source": {"component": "kubelet", "host": "node-1"},
        "firstTimestamp": _ago(minutes=10),
        "lastTimestamp": _ago(seconds=30),
        "count": 4,
    }
    table = _table("Event", event)
    assert _header(table) == [
        ("Last Seen", 0),
        ("Type", 0),
        ("Reason", 0),
        ("Object", 0),
        ("Subobject", 1),
        ("Source", 1),
        ("Message", 0),
        ("First Seen", 1),
        ("Count", 1),
        ("Name", 1),
    ]
    assert _cells(table) == [
        [
            "30s",
            "Normal",
            "Pulled",
            "pod/web-1",
            "spec.containers{web}",
            "kubelet, node-1",
            'Successfully pulled image "nginx"',
            "10m",
            4,
            "web-1.17c",
        ]
    ]
    fresh = {
        "metadata": _meta("e"),
        "involvedObject": {"kind": "Node"},
        "eventTime": _ago(seconds=7),
    }
    assert _cells(_table("Event", fresh))[0][:4] == ["7s", "", "", "node"]
