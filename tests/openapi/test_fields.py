"""Unknown-field detection, as fieldValidation=Strict|Warn uses it."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from k3py.cluster.server.openapi import unknown_fields
from k3py.cluster.server.openapi.fields import build_index, unknown_in

DEPLOYMENT: dict[str, Any] = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "web", "labels": {"app": "web"}, "annotations": {"a": "b"}},
    "spec": {
        "replicas": 2,
        "selector": {"matchLabels": {"app": "web"}},
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%"}},
        "template": {
            "metadata": {"labels": {"app": "web"}},
            "spec": {
                "containers": [
                    {
                        "name": "web",
                        "image": "nginx:1.27",
                        "ports": [{"containerPort": 80, "protocol": "TCP"}],
                        "env": [{"name": "A", "valueFrom": {"fieldRef": {"fieldPath": "x"}}}],
                        "resources": {"limits": {"cpu": "500m", "memory": "64Mi"}},
                        "readinessProbe": {"httpGet": {"port": "http", "path": "/"}},
                        "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                    }
                ],
                "volumes": [{"name": "data", "emptyDir": {"sizeLimit": "1Gi"}}],
                "tolerations": [{"key": "k", "operator": "Exists"}],
            },
        },
    },
    "status": {"replicas": 2, "conditions": [{"type": "Available", "status": "True"}]},
}


def test_a_valid_object_has_no_unknown_fields() -> None:
    assert unknown_fields("apps/v1", "Deployment", DEPLOYMENT) == []


def test_unknown_fields_are_named_by_their_path() -> None:
    obj = copy.deepcopy(DEPLOYMENT)
    obj["spec"]["replicaz"] = 3
    obj["metadata"]["labelz"] = {}
    container = obj["spec"]["template"]["spec"]["containers"][0]
    container["imagez"] = "x"
    container["ports"][0]["hostport"] = 8080
    obj["spec"]["template"]["spec"]["volumes"][0]["emptyDir"]["size"] = "1Gi"
    obj["extra"] = True
    assert unknown_fields("apps/v1", "Deployment", obj) == [
        ".metadata.labelz",
        ".spec.template.spec.containers[0].ports[0].hostport",
        ".spec.template.spec.containers[0].imagez",
        ".spec.template.spec.volumes[0].emptyDir.size",
        ".spec.replicaz",
        ".extra",
    ]


@pytest.mark.parametrize(
    ("api_version", "kind", "obj"),
    [
        (
            "v1",
            "Service",
            {"spec": {"ports": [{"port": 80, "targetPort": 8080}], "selector": {"a": "b"}}},
        ),
        ("v1", "Secret", {"type": "Opaque", "data": {"k": "dmFsdWU="}, "stringData": {"x": "y"}}),
        ("v1", "ConfigMap", {"data": {"k": "v"}, "binaryData": {"b": "AA=="}, "immutable": True}),
        ("coordination.k8s.io/v1", "Lease", {"spec": {"renewTime": "2024-01-01T00:00:00.000000Z"}}),
        ("v1", "Event", {"involvedObject": {"kind": "Pod"}, "eventTime": None, "count": 1}),
        ("v1", "Node", {"status": {"capacity": {"cpu": "4"}, "nodeInfo": {"kubeletVersion": "x"}}}),
        (
            "batch/v1",
            "Job",
            {"spec": {"backoffLimit": 1, "template": {"spec": {"containers": []}}}},
        ),
        ("autoscaling/v1", "Scale", {"spec": {"replicas": 3}}),
        ("v1", "Binding", {"target": {"kind": "Node", "name": "n1"}}),
    ],
)
def test_each_kind_accepts_its_own_fields(api_version: str, kind: str, obj: dict[str, Any]) -> None:
    assert unknown_fields(api_version, kind, {"apiVersion": api_version, "kind": kind, **obj}) == []


def test_free_form_values_are_not_checked() -> None:
    revision = {"data": {"anything": {"goes": [1, 2]}}, "revision": 1}
    assert unknown_fields("apps/v1", "ControllerRevision", revision) == []
    managed = {"metadata": {"managedFields": [{"fieldsV1": {"f:spec": {}}, "manager": "kubectl"}]}}
    assert unknown_fields("v1", "ConfigMap", managed) == []


def test_wrong_value_types_are_left_to_validation() -> None:
    obj = {"spec": {"replicas": "two", "template": [], "selector": {"matchLabels": None}}}
    assert unknown_fields("apps/v1", "Deployment", obj) == []


def test_a_kind_without_a_schema_has_no_unknown_fields() -> None:
    assert unknown_fields("example.com/v1", "Widget", {"spec": {"anything": 1}}) == []
    assert unknown_fields("v1", "Deployment", {"spec": {"anything": 1}}) == []


def test_maps_of_objects_are_walked_by_key() -> None:
    definitions: dict[str, dict[str, Any]] = {
        "Thing": {
            "properties": {"parts": {"type": "object", "additionalProperties": {"$ref": "Part"}}},
            "x-kubernetes-group-version-kind": [{"group": "ex", "version": "v1", "kind": "Thing"}],
        },
        "Part": {"properties": {"size": {"type": "integer"}}},
    }
    index = build_index(definitions)
    thing = {"parts": {"a": {"size": 1}, "b": {"size": 2, "colour": "red"}}, "partz": {}}
    assert unknown_in(index, "ex/v1", "Thing", thing) == [".parts[b].colour", ".partz"]
