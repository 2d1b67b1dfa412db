"""Validation reports what the API server reports, with its field paths and words."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from k3py.cluster.api.defaults import apply_defaults
from k3py.cluster.api.status import Cause, invalid
from k3py.cluster.api.validation import validate_create, validate_update
from tests.api.kinds import info

SUBDOMAIN_MSG = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or "
    "'.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used "
    "for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
)


def _create(kind: str, obj: dict[str, Any]) -> list[Cause]:
    obj = copy.deepcopy(obj)
    apply_defaults(info(kind), obj)
    return validate_create(info(kind), obj)


def _update(kind: str, new: dict[str, Any], old: dict[str, Any]) -> list[Cause]:
    new, old = copy.deepcopy(new), copy.deepcopy(old)
    apply_defaults(info(kind), new)
    apply_defaults(info(kind), old)
    return validate_update(info(kind), new, old)


def _fields(causes: list[Cause]) -> list[str]:
    return [c.field for c in causes]


def _messages(causes: list[Cause]) -> dict[str, str]:
    return {c.field: c.message for c in causes}


def _pod(**spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"containers": [{"name": "web", "image": "nginx:1.25"}]}
    body.update(spec)
    return {"metadata": {"name": "web", "namespace": "default"}, "spec": body}


def _deployment(**spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "replicas": 2,
        "selector": {"matchLabels": {"app": "web"}},
        "template": {
            "metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "web", "image": "nginx:1.25"}]},
        },
    }
    body.update(spec)
    return {"metadata": {"name": "web", "namespace": "default"}, "spec": body}


def _service(**spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"selector": {"app": "web"}, "ports": [{"port": 80}]}
    body.update(spec)
    return {"metadata": {"name": "web", "namespace": "default"}, "spec": body}


# --- valid objects ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "obj"),
    [
        ("Pod", _pod()),
        ("Deployment", _deployment()),
        ("Service", _service()),
        ("Namespace", {"metadata": {"name": "apps"}}),
        ("ConfigMap", {"metadata": {"name": "cfg", "namespace": "d"}, "data": {"a.conf": "x"}}),
        (
            "Secret",
            {"metadata": {"name": "s", "namespace": "d"}, "stringData": {"password": "hunter2"}},
        ),
        ("Node", {"metadata": {"name": "node-1"}, "spec": {"podCIDRs": ["10.42.1.0/24"]}}),
        ("Lease", {"metadata": {"name": "node-1", "namespace": "kube-node-lease"}, "spec": {}}),
        (
            "DaemonSet",
            {
                "metadata": {"name": "agent", "namespace": "kube-system"},
                "spec": {
                    "selector": {"matchLabels": {"app": "agent"}},
                    "template": {
                        "metadata": {"labels": {"app": "agent"}},
                        "spec": {"containers": [{"name": "a", "image": "agent:1"}]},
                    },
                },
            },
        ),
        (
            "Job",
            {
                "metadata": {"name": "pi", "namespace": "d", "uid": "u-1"},
                "spec": {
                    "template": {
                        "spec": {
                            "restartPolicy": "Never",
                            "containers": [{"name": "pi", "image": "perl"}],
                        }
                    }
                },
            },
        ),
    ],
)
def test_valid_objects_have_no_causes(kind: str, obj: dict[str, Any]) -> None:
    assert _create(kind, obj) == []


# --- metadata -----------------------------------------------------------------------------


def test_name_rules_per_kind() -> None:
    causes = _create("Pod", {**_pod(), "metadata": {"name": "Foo_bar", "namespace": "default"}})
    assert causes == [
        Cause("FieldValueInvalid", f'Invalid value: "Foo_bar": {SUBDOMAIN_MSG}', "metadata.name")
    ]
    error = invalid("", "Pod", "Foo_bar", causes)
    assert error.code == 422
    assert error.message.startswith('Pod "Foo_bar" is invalid: metadata.name: Invalid value: ')
    ns = _messages(_create("Namespace", {"metadata": {"name": "my.ns"}}))
    assert ns["metadata.name"] == 'Invalid value: "my.ns": must not contain dots'
    svc = _messages(
        _create("Service", {**_service(), "metadata": {"name": "1web", "namespace": "d"}})
    )
    assert svc["metadata.name"].startswith('Invalid value: "1web": a DNS-1035 label must consist')
    long_name = "a" * 254
    assert (
        "must be no more than 253 characters"
        in _messages(_create("ConfigMap", {"metadata": {"name": long_name, "namespace": "d"}}))[
            "metadata.name"
        ]
    )


def test_generate_name_missing_name_and_namespace_scope() -> None:
    ok = _create(
        "Pod", {**_pod(), "metadata": {"generateName": "web-", "name": "web-x1", "namespace": "d"}}
    )
    assert ok == []
    bad = _create(
        "Pod", {**_pod(), "metadata": {"generateName": "Web-", "name": "web-x1", "namespace": "d"}}
    )
    assert _fields(bad) == ["metadata.generateName"]
    missing = _create("ConfigMap", {"metadata": {"namespace": "d"}})
    assert missing == [
        Cause(
            "FieldValueRequired",
            "Required value: name or generateName is required",
            "metadata.name",
        )
    ]
    no_ns = _create("ConfigMap", {"metadata": {"name": "c"}})
    assert no_ns == [Cause("FieldValueRequired", "Required value", "metadata.namespace")]
    node = _create("Node", {"metadata": {"name": "n", "namespace": "d"}})
    assert node == [
        Cause("FieldValueForbidden", "Forbidden: not allowed on this type", "metadata.namespace")
    ]


def test_labels_annotations_finalizers_owner_references() -> None:
    meta = {
        "name": "c",
        "namespace": "d",
        "labels": {"bad key": "ok", "app": "-bad-", "example.com/x": "v"},
        "annotations": {"big": "x" * (256 * 1024)},
        "finalizers": ["orphan", "foregroundDeletion"],
        "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs"}],
    }
    causes = _create("ConfigMap", {"metadata": meta})
    messages = [c.message for c in causes]
    assert _fields(causes).count("metadata.labels") == 2
    assert any(
        m.startswith('Invalid value: "bad key": name part must consist of') for m in messages
    )
    assert any(m.startswith('Invalid value: "-bad-": a valid label must be') for m in messages)
    assert (
        Cause(
            "FieldValueTooLong", "Too long: must have at most 262144 bytes", "metadata.annotations"
        )
        in causes
    )
    assert (
        Cause(
            "FieldValueInvalid",
            'Invalid value: "": uid must not be empty',
            "metadata.ownerReferences.uid",
        )
        in causes
    )
    assert "finalizer orphan and foregroundDeletion cannot be both set" in messages[-1]


def test_metadata_update_rules() -> None:
    old = {"metadata": {"name": "c", "namespace": "d", "uid": "1", "creationTimestamp": "t"}}
    renamed = {"metadata": {"name": "c2", "namespace": "d", "uid": "1"}}
    assert _messages(_update("ConfigMap", renamed, old)) == {
        "metadata.name": 'Invalid value: "c2": field is immutable'
    }
    new_uid = {"metadata": {"name": "c", "namespace": "d", "uid": "2"}}
    assert _fields(_update("ConfigMap", new_uid, old)) == ["metadata.uid"]
    assert _update("ConfigMap", {"metadata": {"name": "c", "namespace": "d"}}, old) == []
    deleting = {"metadata": {**old["metadata"], "deletionTimestamp": "now", "finalizers": ["a"]}}
    more = copy.deepcopy(deleting)
    more["metadata"]["finalizers"] = ["a", "example.com/b"]
    (cause,) = _update("ConfigMap", more, deleting)
    assert cause.message == (
        "Forbidden: no new finalizers can be added if the object is being deleted, "
        'found new finalizers []string{"example.com/b"}'
    )


# --- pods ---------------------------------------------------------------------------------


def test_pod_spec_errors() -> None:
    pod = _pod(
        restartPolicy="Sometimes",
        volumes=[
            {"name": "data", "emptyDir": {}},
            {"name": "data", "configMap": {"name": "c"}, "secret": {}},
        ],
        containers=[
            {
                "name": "web",
                "image": "nginx",
                "ports": [{"containerPort": 70000, "protocol": "ICMP"}],
                "env": [{"name": "A=B", "value": "1"}, {"value": "x"}],
                "volumeMounts": [{"name": "logs", "mountPath": "/logs"}],
                "resources": {"requests": {"cpu": "2", "memory": "lots"}, "limits": {"cpu": "1"}},
            },
            {"name": "web"},
        ],
        tolerations=[{"operator": "Equal", "value": "x"}],
    )
    messages = _messages(_create("Pod", pod))
    assert messages["spec.restartPolicy"] == (
        'Unsupported value: "Sometimes": supported values: "Always", "OnFailure", "Never"'
    )
    assert messages["spec.volumes[1].name"] == 'Duplicate value: "data"'
    assert (
        messages["spec.volumes[1].configMap"]
        == "Forbidden: may not specify more than 1 volume type"
    )
    c0 = "spec.containers[0]"
    assert messages[f"{c0}.ports[0].containerPort"] == (
        "Invalid value: 70000: must be between 1 and 65535, inclusive"
    )
    assert messages[f"{c0}.ports[0].protocol"] == (
        'Unsupported value: "ICMP": supported values: "SCTP", "TCP", "UDP"'
    )
    assert messages[f"{c0}.env[0].name"].startswith('Invalid value: "A=B": a valid environment')
    assert messages[f"{c0}.env[1].name"] == "Required value"
    assert messages[f"{c0}.volumeMounts[0].name"] == 'Not found: "logs"'
    assert messages[f"{c0}.resources.requests"] == (
        'Invalid value: "2": must be less than or equal to cpu limit of 1'
    )
    assert messages[f"{c0}.resources.requests[memory]"].startswith(
        'Invalid value: "lots": quantities must match the regular expression'
    )
    assert messages["spec.containers[1].name"] == 'Duplicate value: "web"'
    assert messages["spec.containers[1].image"] == "Required value"
    assert messages["spec.tolerations[0].operator"].startswith(
        'Invalid value: "Equal": operator must be Exists when `key` is empty'
    )
    assert _messages(_create("Pod", _pod(containers=[])))["spec.containers"] == "Required value"


def test_pod_update_allows_only_images_deadline_and_added_tolerations() -> None:
    old = _pod(
        tolerations=[
            {"key": "a", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 5}
        ]
    )
    new_image = copy.deepcopy(old)
    new_image["spec"]["containers"][0]["image"] = "nginx:1.26"
    new_image["spec"]["activeDeadlineSeconds"] = 60
    new_image["spec"]["tolerations"].append({"key": "b", "operator": "Exists"})
    new_image["spec"]["tolerations"][0]["tolerationSeconds"] = 1
    assert _update("Pod", new_image, old) == []
    changed = copy.deepcopy(old)
    changed["spec"]["restartPolicy"] = "Never"
    (cause,) = _update("Pod", changed, old)
    assert cause.field == "spec"
    assert cause.message.startswith(
        "Forbidden: pod updates may not change fields other than `spec.containers[*].image`,"
    )
    assert '+\trestartPolicy: "Never",' in cause.message
    removed = copy.deepcopy(old)
    removed["spec"]["tolerations"] = []
    assert "spec.tolerations[0]" in _fields(_update("Pod", removed, old))
    more = copy.deepcopy(old)
    more["spec"]["containers"].append({"name": "b", "image": "b"})
    assert _messages(_update("Pod", more, old))["spec.containers"] == (
        "Forbidden: pod updates may not add or remove containers"
    )
    deadline = _pod(activeDeadlineSeconds=30)
    longer = _pod(activeDeadlineSeconds=60)
    assert _fields(_update("Pod", longer, deadline)) == ["spec.activeDeadlineSeconds"]


# --- workloads ----------------------------------------------------------------------------


def test_deployment_errors() -> None:
    no_selector = _deployment()
    del no_selector["spec"]["selector"]
    messages = _messages(_create("Deployment", no_selector))
    assert messages["spec.selector"] == "Required value"
    empty = _messages(_create("Deployment", _deployment(selector={})))
    assert empty["spec.selector"] == (
        "Invalid value: v1.LabelSelector{MatchLabels:map[string]string(nil), "
        "MatchExpressions:[]v1.LabelSelectorRequirement(nil)}: "
        "empty selector is invalid for deployment"
    )
    mismatch = _deployment(selector={"matchLabels": {"app": "api"}})
    assert _messages(_create("Deployment", mismatch))["spec.template.metadata.labels"] == (
        'Invalid value: map[string]string{"app":"web"}: `selector` does not match template `labels`'
    )
    bad = _deployment(
        replicas=-1,
        minReadySeconds=700,
        strategy={"type": "Recreate", "rollingUpdate": {"maxSurge": 1}},
    )
    bad["spec"]["template"]["spec"]["restartPolicy"] = "OnFailure"
    messages = _messages(_create("Deployment", bad))
    assert messages["spec.replicas"] == "Invalid value: -1: must be greater than or equal to 0"
    assert messages["spec.strategy.rollingUpdate"] == (
        "Forbidden: may not be specified when strategy `type` is 'Recreate'"
    )
    assert messages["spec.template.spec.restartPolicy"] == (
        'Unsupported value: "OnFailure": supported values: "Always"'
    )
    assert (
        messages["spec.progressDeadlineSeconds"]
        == "Invalid value: 600: must be greater than minReadySeconds"
    )
    zero = _deployment(strategy={"rollingUpdate": {"maxSurge": 0, "maxUnavailable": "0%"}})
    assert _messages(_create("Deployment", zero))["spec.strategy.rollingUpdate.maxUnavailable"] == (
        'Invalid value: intstr.IntOrString{Type:1, IntVal:0, StrVal:"0%"}: '
        "may not be 0 when `maxSurge` is 0"
    )
    expr = _deployment(selector={"matchExpressions": [{"key": "app", "operator": "Near"}]})
    assert "spec.selector.matchExpressions[0].operator" in _fields(_create("Deployment", expr))


def test_workload_selectors_are_immutable() -> None:
    old = _deployment()
    new = _deployment(
        selector={"matchLabels": {"app": "web", "tier": "x"}},
        template={
            "metadata": {"labels": {"app": "web", "tier": "x"}},
            "spec": {"containers": [{"name": "web", "image": "nginx"}]},
        },
    )
    assert _messages(_update("Deployment", new, old)) == {
        "spec.selector": "Invalid value: v1.LabelSelector{MatchLabels:map[string]string"
        '{"app":"web", "tier":"x"}, MatchExpressions:[]v1.LabelSelectorRequirement(nil)}: '
        "field is immutable"
    }
    scaled = _deployment(replicas=5)
    assert _update("Deployment", scaled, old) == []
    rs_old = {"metadata": old["metadata"], "spec": dict(old["spec"])}
    rs_new = copy.deepcopy(rs_old)
    rs_new["spec"]["selector"] = {"matchLabels": {"app": "other"}}
    assert "spec.selector" in _fields(_update("ReplicaSet", rs_new, rs_old))


def test_daemon_set_strategy() -> None:
    ds: dict[str, Any] = {
        "metadata": {"name": "a", "namespace": "d"},
        "spec": {
            "selector": {"matchLabels": {"app": "a"}},
            "updateStrategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 1},
            },
            "template": {
                "metadata": {"labels": {"app": "a"}},
                "spec": {"containers": [{"name": "a", "image": "a"}]},
            },
        },
    }
    assert _fields(_create("DaemonSet", ds)) == ["spec.updateStrategy.rollingUpdate.maxSurge"]
    ds["spec"]["updateStrategy"] = {"type": "Sometimes"}
    assert _messages(_create("DaemonSet", ds))["spec.updateStrategy.type"] == (
        'Unsupported value: "Sometimes": supported values: "RollingUpdate", "OnDelete"'
    )


def _job(**spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "template": {
            "spec": {"restartPolicy": "Never", "containers": [{"name": "pi", "image": "perl"}]}
        }
    }
    body.update(spec)
    return {"metadata": {"name": "pi", "namespace": "d", "uid": "u-1"}, "spec": body}


def test_job_rules() -> None:
    always = _job()
    del always["spec"]["template"]["spec"]["restartPolicy"]
    assert _messages(_create("Job", always))["spec.template.spec.restartPolicy"] == (
        'Unsupported value: "Always": supported values: "OnFailure", "Never"'
    )
    own_selector = _job(
        selector={"matchLabels": {"app": "pi"}},
        template={
            "metadata": {"labels": {"app": "pi"}},
            "spec": {"restartPolicy": "Never", "containers": [{"name": "pi", "image": "perl"}]},
        },
    )
    assert _messages(_create("Job", own_selector))["spec.selector"].endswith(
        ": `selector` not auto-generated"
    )
    manual = _job(manualSelector=True)
    assert _messages(_create("Job", manual))["spec.selector"] == "Required value"
    old = _job()
    changed = _job(
        completions=3,
        template={
            "spec": {"restartPolicy": "Never", "containers": [{"name": "pi", "image": "perl:2"}]}
        },
    )
    fields = _fields(_update("Job", changed, old))
    assert "spec.template" in fields
    assert "spec.completions" in fields
    suspended = _job(suspend=True)
    assert _update("Job", suspended, old) == []


# --- services and the small kinds -------------------------------------------------------------


def test_service_errors() -> None:
    messages = _messages(_create("Service", _service(ports=[])))
    assert messages["spec.ports"] == "Required value"
    assert _create("Service", _service(ports=[], clusterIP="None")) == []
    two = _service(ports=[{"port": 80}, {"port": 80, "name": "http"}, {"port": 0, "name": "x"}])
    messages = _messages(_create("Service", two))
    assert messages["spec.ports[0].name"] == "Required value"
    assert messages["spec.ports[1]"].startswith(
        'Duplicate value: core.ServicePort{Name:"", Protocol:"TCP"'
    )
    assert (
        messages["spec.ports[2].port"] == "Invalid value: 0: must be between 1 and 65535, inclusive"
    )
    typed = _messages(_create("Service", _service(type="Magic")))
    assert typed["spec.type"] == (
        'Unsupported value: "Magic": supported values: '
        '"ClusterIP", "ExternalName", "LoadBalancer", "NodePort"'
    )
    external = _messages(_create("Service", _service(type="ExternalName", ports=[])))
    assert external["spec.externalName"] == "Required value"
    node_port = _messages(_create("Service", _service(ports=[{"port": 80, "nodePort": 30080}])))
    assert (
        node_port["spec.ports[0].nodePort"]
        == "Forbidden: may not be used when `type` is 'ClusterIP'"
    )


def test_service_cluster_ip_is_kept_once_set() -> None:
    old = _service(clusterIP="10.43.0.10")
    moved = _service(clusterIP="10.43.0.11")
    assert _messages(_update("Service", moved, old)) == {
        "spec.clusterIPs[0]": 'Invalid value: []string{"10.43.0.11"}: may not change once set'
    }
    unset = _service()
    assert _fields(_update("Service", unset, old)) == ["spec.clusterIPs[0]"]
    assert _update("Service", _service(clusterIP="10.43.0.10", ports=[{"port": 81}]), old) == []


def test_config_map_and_secret_rules() -> None:
    cm = {
        "metadata": {"name": "c", "namespace": "d"},
        "data": {"bad key": "x"},
        "binaryData": {"bad key": "eA=="},
    }
    messages = _messages(_create("ConfigMap", cm))
    assert (
        messages["data[bad key]"]
        == 'Invalid value: "bad key": duplicate of key present in binaryData'
    )
    frozen: dict[str, Any] = {
        "metadata": {"name": "c", "namespace": "d"},
        "data": {"a": "1"},
        "immutable": True,
    }
    thawed = copy.deepcopy(frozen)
    thawed["data"]["a"] = "2"
    del thawed["immutable"]
    assert _messages(_update("ConfigMap", thawed, frozen)) == {
        "immutable": "Forbidden: field is immutable when `immutable` is set",
        "data": "Forbidden: field is immutable when `immutable` is set",
    }
    tls = {
        "metadata": {"name": "t", "namespace": "d"},
        "type": "kubernetes.io/tls",
        "data": {"tls.crt": "eA=="},
    }
    assert _messages(_create("Secret", tls)) == {"data[tls.key]": "Required value"}
    bad64 = {"metadata": {"name": "s", "namespace": "d"}, "data": {"k": "not base64!"}}
    assert _fields(_create("Secret", bad64)) == ["data[k]"]
    retyped = copy.deepcopy(tls)
    retyped["type"] = "Opaque"
    assert (
        _messages(_update("Secret", retyped, tls))["type"]
        == 'Invalid value: "Opaque": field is immutable'
    )


def test_namespace_node_lease_event_rules() -> None:
    ns = {"metadata": {"name": "a"}, "spec": {"finalizers": ["custom"]}}
    assert _messages(_create("Namespace", ns)) == {
        "spec.finalizers": 'Invalid value: "custom": '
        "name is neither a standard finalizer name nor is it fully qualified"
    }
    node = {
        "metadata": {"name": "n"},
        "spec": {"podCIDRs": ["10.42.1.0/24"], "taints": [{"key": "k", "effect": "Sometimes"}]},
    }
    assert _fields(_create("Node", node)) == ["spec.taints[0].effect"]
    old_node = {"metadata": {"name": "n"}, "spec": {"podCIDRs": ["10.42.1.0/24"]}}
    moved = {"metadata": {"name": "n"}, "spec": {"podCIDRs": ["10.42.2.0/24"]}}
    assert _messages(_update("Node", moved, old_node)) == {
        "spec.podCIDRs": 'Forbidden: node updates may not change podCIDR except from "" to valid'
    }
    lease = {"metadata": {"name": "l", "namespace": "d"}, "spec": {"leaseDurationSeconds": 0}}
    assert _messages(_create("Lease", lease)) == {
        "spec.leaseDurationSeconds": "Invalid value: 0: must be greater than 0"
    }
    event = {
        "metadata": {"name": "e", "namespace": "apps"},
        "involvedObject": {"kind": "Pod", "name": "p", "namespace": "other"},
    }
    assert _messages(_create("Event", event)) == {
        "involvedObject.namespace": 'Invalid value: "other": does not match event.namespace'
    }
