"""Defaulting fills in what the real API server fills in, and only that, idempotently."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from k3py.cluster.api.defaults import apply_defaults, image_tag, pod_qos_class, prepare_for_update
from tests.api.kinds import info

CONTAINER_DEFAULTS = {
    "imagePullPolicy": "IfNotPresent",
    "resources": {},
    "terminationMessagePath": "/dev/termination-log",
    "terminationMessagePolicy": "File",
}
POD_SPEC_DEFAULTS = {
    "dnsPolicy": "ClusterFirst",
    "restartPolicy": "Always",
    "schedulerName": "default-scheduler",
    "securityContext": {},
    "terminationGracePeriodSeconds": 30,
}


def _defaulted(kind: str, obj: dict[str, Any]) -> dict[str, Any]:
    result = copy.deepcopy(obj)
    apply_defaults(info(kind), result)
    again = copy.deepcopy(result)
    apply_defaults(info(kind), again)
    assert again == result, "defaulting twice must change nothing"
    return result


def test_minimal_pod_gets_the_api_server_defaults() -> None:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {
            "containers": [{"name": "web", "image": "nginx:1.25", "ports": [{"containerPort": 80}]}]
        },
    }
    result = _defaulted("Pod", pod)
    assert result["spec"] == {
        **POD_SPEC_DEFAULTS,
        "containers": [
            {
                "name": "web",
                "image": "nginx:1.25",
                "ports": [{"containerPort": 80, "protocol": "TCP"}],
                **CONTAINER_DEFAULTS,
            }
        ],
        "enableServiceLinks": True,
        "preemptionPolicy": "PreemptLowerPriority",
        "priority": 0,
        "tolerations": [
            {
                "key": "node.kubernetes.io/not-ready",
                "operator": "Exists",
                "effect": "NoExecute",
                "tolerationSeconds": 300,
            },
            {
                "key": "node.kubernetes.io/unreachable",
                "operator": "Exists",
                "effect": "NoExecute",
                "tolerationSeconds": 300,
            },
        ],
    }
    assert result["status"] == {"phase": "Pending", "qosClass": "BestEffort"}


def test_pod_keeps_user_values_and_defaults_nested_parts() -> None:
    pod = {
        "metadata": {"name": "p"},
        "spec": {
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 0,
            "hostNetwork": True,
            "tolerations": [{"key": "node.kubernetes.io/not-ready", "operator": "Exists"}],
            "containers": [
                {
                    "name": "c",
                    "image": "busybox",
                    "ports": [{"containerPort": 8080}],
                    "resources": {"limits": {"cpu": "0.5", "memory": "1.5Gi"}},
                    "env": [
                        {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}
                    ],
                    "livenessProbe": {"httpGet": {"port": 8080}},
                    "readinessProbe": {"exec": {"command": ["true"]}, "periodSeconds": 5},
                }
            ],
            "volumes": [
                {"name": "a"},
                {"name": "b", "configMap": {"name": "cfg"}},
                {"name": "c", "hostPath": {"path": "/data"}},
                {"name": "d", "secret": {"secretName": "s", "defaultMode": 256}},
            ],
        },
    }
    result = _defaulted("Pod", pod)
    spec = result["spec"]
    assert spec["restartPolicy"] == "Never"
    assert spec["terminationGracePeriodSeconds"] == 0
    (container,) = spec["containers"]
    assert container["imagePullPolicy"] == "Always"  # no tag means :latest
    assert container["ports"] == [{"containerPort": 8080, "protocol": "TCP", "hostPort": 8080}]
    assert container["resources"] == {
        "limits": {"cpu": "500m", "memory": "1536Mi"},
        "requests": {"cpu": "500m", "memory": "1536Mi"},
    }
    assert container["env"][0]["valueFrom"]["fieldRef"]["apiVersion"] == "v1"
    assert container["livenessProbe"] == {
        "httpGet": {"port": 8080, "path": "/", "scheme": "HTTP"},
        "timeoutSeconds": 1,
        "periodSeconds": 10,
        "successThreshold": 1,
        "failureThreshold": 3,
    }
    assert container["readinessProbe"]["periodSeconds"] == 5
    assert spec["volumes"] == [
        {"name": "a", "emptyDir": {}},
        {"name": "b", "configMap": {"name": "cfg", "defaultMode": 420}},
        {"name": "c", "hostPath": {"path": "/data", "type": ""}},
        {"name": "d", "secret": {"secretName": "s", "defaultMode": 256}},
    ]
    # The user's not-ready toleration stands; only the unreachable one is added.
    assert [t["key"] for t in spec["tolerations"]] == [
        "node.kubernetes.io/not-ready",
        "node.kubernetes.io/unreachable",
    ]
    assert result["status"]["qosClass"] == "Guaranteed"


def test_deployment_defaults_and_template_is_defaulted_like_a_pod_spec() -> None:
    deployment = {
        "metadata": {"name": "web"},
        "spec": {
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": "nginx:1.25"}]},
            },
        },
    }
    spec = _defaulted("Deployment", deployment)["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"},
    }
    assert spec["revisionHistoryLimit"] == 10
    assert spec["progressDeadlineSeconds"] == 600
    template_spec = spec["template"]["spec"]
    assert template_spec == {
        **POD_SPEC_DEFAULTS,
        "containers": [{"name": "web", "image": "nginx:1.25", **CONTAINER_DEFAULTS}],
    }  # no pod-only defaults (enableServiceLinks, priority, tolerations) in templates
    recreate = _defaulted(
        "Deployment", {"spec": {"replicas": 0, "strategy": {"type": "Recreate"}}}
    )["spec"]
    assert recreate["strategy"] == {"type": "Recreate"}
    assert recreate["replicas"] == 0


def test_replica_set_and_daemon_set_defaults() -> None:
    assert _defaulted("ReplicaSet", {"spec": {}})["spec"]["replicas"] == 1
    ds = _defaulted("DaemonSet", {"spec": {"template": {"spec": {"containers": []}}}})["spec"]
    assert ds["updateStrategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0},
    }
    assert ds["revisionHistoryLimit"] == 10
    assert ds["template"]["spec"]["restartPolicy"] == "Always"


def test_job_defaults_and_generated_selector() -> None:
    job = {
        "metadata": {"name": "pi", "namespace": "default", "uid": "1234"},
        "spec": {
            "template": {
                "metadata": {"labels": {"app": "pi"}},
                "spec": {"restartPolicy": "Never", "containers": [{"name": "pi", "image": "perl"}]},
            }
        },
    }
    result = _defaulted("Job", job)
    spec = result["spec"]
    assert {k: spec[k] for k in ("completions", "parallelism", "backoffLimit")} == {
        "completions": 1,
        "parallelism": 1,
        "backoffLimit": 6,
    }
    assert spec["completionMode"] == "NonIndexed"
    assert spec["suspend"] is False
    assert spec["podReplacementPolicy"] == "TerminatingOrFailed"
    assert "manualSelector" not in spec
    assert spec["selector"] == {"matchLabels": {"batch.kubernetes.io/controller-uid": "1234"}}
    assert spec["template"]["metadata"]["labels"] == {
        "app": "pi",
        "job-name": "pi",
        "batch.kubernetes.io/job-name": "pi",
        "controller-uid": "1234",
        "batch.kubernetes.io/controller-uid": "1234",
    }
    assert result["metadata"]["labels"] == {"app": "pi"}
    parallel = _defaulted("Job", {"metadata": {"name": "p"}, "spec": {"parallelism": 3}})["spec"]
    assert "completions" not in parallel
    assert "selector" not in parallel  # no uid yet: nothing to select on
    manual = _defaulted(
        "Job",
        {"metadata": {"name": "m", "uid": "9"}, "spec": {"manualSelector": True, "selector": {}}},
    )["spec"]
    assert manual["selector"] == {}


def test_service_defaults() -> None:
    service = {
        "metadata": {"name": "web"},
        "spec": {
            "selector": {"app": "web"},
            "ports": [{"port": 80}, {"port": 53, "protocol": "UDP", "targetPort": "dns"}],
        },
    }
    spec = _defaulted("Service", service)["spec"]
    assert spec == {
        "selector": {"app": "web"},
        "ports": [
            {"port": 80, "protocol": "TCP", "targetPort": 80},
            {"port": 53, "protocol": "UDP", "targetPort": "dns"},
        ],
        "type": "ClusterIP",
        "sessionAffinity": "None",
        "internalTrafficPolicy": "Cluster",
        "ipFamilyPolicy": "SingleStack",
        "ipFamilies": ["IPv4"],
    }
    lb = _defaulted("Service", {"spec": {"type": "LoadBalancer", "ports": [{"port": 443}]}})
    assert lb["spec"]["externalTrafficPolicy"] == "Cluster"
    assert lb["spec"]["allocateLoadBalancerNodePorts"] is True
    assert lb["status"] == {"loadBalancer": {}}
    external = _defaulted(
        "Service", {"spec": {"type": "ExternalName", "externalName": "a.example"}}
    )
    assert "ipFamilies" not in external["spec"]


def test_secret_namespace_node_endpoints_defaults() -> None:
    assert _defaulted("Secret", {"metadata": {"name": "s"}})["type"] == "Opaque"
    assert _defaulted("Secret", {"type": "kubernetes.io/tls"})["type"] == "kubernetes.io/tls"
    ns = _defaulted("Namespace", {"metadata": {"name": "apps"}})
    assert ns["metadata"]["labels"] == {"kubernetes.io/metadata.name": "apps"}
    assert ns["spec"] == {"finalizers": ["kubernetes"]}
    assert ns["status"] == {"phase": "Active"}
    finalized = _defaulted(
        "Namespace",
        {"metadata": {"name": "apps", "deletionTimestamp": "2024-01-01T00:00:00Z"}, "spec": {}},
    )
    assert finalized["spec"] == {}
    node = _defaulted(
        "Node", {"status": {"capacity": {"cpu": 4, "memory": "4026532Ki", "pods": "110"}}}
    )
    assert node["status"]["allocatable"] == {"cpu": "4", "memory": "4026532Ki", "pods": "110"}
    ep = _defaulted("Endpoints", {"subsets": [{"ports": [{"port": 80}]}]})
    assert ep["subsets"][0]["ports"] == [{"port": 80, "protocol": "TCP"}]
    cm = {"data": {"a": "b"}}
    assert _defaulted("ConfigMap", cm) == cm


@pytest.mark.parametrize(
    ("image", "tag"),
    [
        ("nginx", "latest"),
        ("nginx:latest", "latest"),
        ("nginx:1.25", "1.25"),
        ("localhost:5000/app", "latest"),
        ("registry.example:5000/team/app:v2", "v2"),
        ("app@sha256:" + "a" * 64, ""),
        ("app:v1@sha256:" + "a" * 64, "v1"),
        ("Bad/Image", ""),
        ("", ""),
    ],
)
def test_image_tag_rule(image: str, tag: str) -> None:
    assert image_tag(image) == tag


def test_qos_classes() -> None:
    def spec(resources: dict[str, Any]) -> dict[str, Any]:
        return {"containers": [{"name": "c", "resources": resources}]}

    assert pod_qos_class(spec({})) == "BestEffort"
    assert pod_qos_class(spec({"requests": {"cpu": "100m"}})) == "Burstable"
    both = {"cpu": "1", "memory": "1Gi"}
    assert pod_qos_class(spec({"requests": both, "limits": both})) == "Guaranteed"
    assert pod_qos_class(spec({"requests": {"cpu": "1"}, "limits": both})) == "Burstable"


def test_prepare_for_update_carries_server_assigned_values() -> None:
    old: dict[str, Any] = {
        "metadata": {"name": "web", "uid": "u1", "creationTimestamp": "2024-01-01T00:00:00Z"},
        "spec": {
            "type": "NodePort",
            "clusterIP": "10.43.0.10",
            "clusterIPs": ["10.43.0.10"],
            "ipFamilies": ["IPv4"],
            "ipFamilyPolicy": "SingleStack",
            "ports": [{"port": 80, "protocol": "TCP", "nodePort": 30080}],
        },
    }
    new: dict[str, Any] = {
        "metadata": {"name": "web"},
        "spec": {"type": "NodePort", "ports": [{"port": 80}]},
    }
    prepare_for_update(info("Service"), new, old)
    assert new["metadata"]["uid"] == "u1"
    assert new["spec"]["clusterIP"] == "10.43.0.10"
    assert new["spec"]["ports"][0]["nodePort"] == 30080


def test_secret_string_data_is_folded_into_data() -> None:
    secret = {
        "metadata": {"name": "s"},
        "data": {"a": "eA==", "b": "eA=="},
        "stringData": {"b": "hunter2", "c": "ok"},
    }
    result = _defaulted("Secret", secret)
    assert "stringData" not in result
    assert result["data"] == {"a": "eA==", "b": "aHVudGVyMg==", "c": "b2s="}
