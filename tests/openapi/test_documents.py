"""The served OpenAPI documents: what kubectl and other clients rely on in them."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest

from k3py.cluster.api.resources import RESOURCES, ResourceInfo
from k3py.cluster.server import openapi

META = "io.k8s.apimachinery.pkg.apis.meta.v1"
GROUP_PACKAGES = {
    "": "core",
    "apps": "apps",
    "batch": "batch",
    "coordination.k8s.io": "coordination",
    "policy": "policy",
    "rbac.authorization.k8s.io": "rbac",
    "authorization.k8s.io": "authorization",
    "authentication.k8s.io": "authentication",
}


def _v2() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(openapi.v2_document())
    return document


def _v3(path: str) -> dict[str, Any]:
    raw = openapi.v3_document(path)
    assert raw is not None, path
    document: dict[str, Any] = json.loads(raw)
    return document


def _gv_path(info: ResourceInfo) -> str:
    return f"api/{info.version}" if not info.group else f"apis/{info.group}/{info.version}"


def _definition(info: ResourceInfo) -> str:
    if info.group == "ota.k3py.io":  # k3py's own kinds are named under io.k3py
        return f"io.k3py.ota.{info.version}.{info.kind}"
    return f"io.k8s.api.{GROUP_PACKAGES[info.group]}.{info.version}.{info.kind}"


def _gvk(info: ResourceInfo, kind: str | None = None) -> dict[str, str]:
    return {"group": info.group, "kind": kind or info.kind, "version": info.version}


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if "$ref" in node else []
        return found + [ref for value in node.values() for ref in _refs(value)]
    if isinstance(node, list):
        return [ref for value in node for ref in _refs(value)]
    return []


def test_v3_index_points_at_each_served_group_version_by_its_hash() -> None:
    index = openapi.v3_index()
    served = {_gv_path(info) for info in RESOURCES}
    assert set(index["paths"]) == served
    for path, entry in index["paths"].items():
        raw = openapi.v3_document(path)
        assert raw is not None
        digest = hashlib.sha512(raw).hexdigest().upper()
        assert entry["serverRelativeURL"] == f"/openapi/v3/{path}?hash={digest}"


def test_unknown_group_version_has_no_document() -> None:
    assert openapi.v3_document("apis/networking.k8s.io/v1") is None


@pytest.mark.parametrize("info", [r for r in RESOURCES if "patch" in r.verbs], ids=lambda r: r.kind)
def test_every_patch_operation_lets_kubectl_leave_validation_to_the_server(
    info: ResourceInfo,
) -> None:
    # kubectl sends fieldValidation=Strict (instead of downloading v2 as protobuf) when the
    # kind's patch operation declares the parameter, and computes apply patches from v3 when
    # it accepts strategic merge patches. Go map order picks any matching operation: all must.
    document = _v3(_gv_path(info))
    patches = [
        item["patch"]
        for item in document["paths"].values()
        if "patch" in item and item["patch"]["x-kubernetes-group-version-kind"] == _gvk(info)
    ]
    assert patches, f"no patch operation for {info.kind}"
    for operation in patches:
        query = {p["name"] for p in operation["parameters"] if p["in"] == "query"}
        assert {"fieldValidation", "fieldManager", "dryRun"} <= query
        assert "application/strategic-merge-patch+json" in operation["requestBody"]["content"]


@pytest.mark.parametrize("info", RESOURCES, ids=lambda r: r.kind)
def test_every_kind_is_described_under_its_kubernetes_name(info: ResourceInfo) -> None:
    name = _definition(info)
    for document, schemas in (
        (_v3(_gv_path(info)), "components"),
        (_v2(), "definitions"),
    ):
        definitions = (
            document["components"]["schemas"]
            if schemas == "components"
            else document["definitions"]
        )
        assert definitions[name]["x-kubernetes-group-version-kind"] == [_gvk(info)]
        assert definitions[name]["description"]
        if "list" in info.verbs:
            listed = definitions[name + "List"]
            assert listed["x-kubernetes-group-version-kind"] == [_gvk(info, info.list_kind)]
            assert listed["required"] == ["items"]


def test_explain_finds_each_kind_from_its_collection_path() -> None:
    # kubectl explain reads the GVK from the resource's list (or item) path operations.
    for info in RESOURCES:
        paths = _v3(_gv_path(info))["paths"]
        base = "/" + _gv_path(info)
        scope = f"{base}/namespaces/{{namespace}}" if info.namespaced else base
        item = paths.get(f"{scope}/{info.plural}") or paths[f"{scope}/{info.plural}/{{name}}"]
        gvks = [
            op["x-kubernetes-group-version-kind"] for op in item.values() if "operationId" in op
        ]
        assert _gvk(info) in gvks


def test_every_reference_resolves_in_its_own_document() -> None:
    v2 = _v2()
    for ref in _refs(v2):
        assert ref.startswith("#/definitions/")
        assert ref.removeprefix("#/definitions/") in v2["definitions"], ref
    for path in openapi.v3_index()["paths"]:
        document = _v3(path)
        for ref in _refs(document):
            assert ref.startswith("#/components/schemas/")
            assert ref.removeprefix("#/components/schemas/") in document["components"]["schemas"]


def test_meta_and_apimachinery_types_use_kubernetes_names_and_shapes() -> None:
    definitions = _v2()["definitions"]
    for kind in ("ObjectMeta", "ListMeta", "Status", "DeleteOptions", "WatchEvent", "Patch"):
        assert f"{META}.{kind}" in definitions
    assert definitions[f"{META}.Table"]["required"] == ["columnDefinitions", "rows"]
    assert definitions["io.k8s.apimachinery.pkg.util.intstr.IntOrString"] | {"description": ""} == {
        "description": "",
        "type": "string",
        "format": "int-or-string",
    }
    assert definitions["io.k8s.apimachinery.pkg.api.resource.Quantity"]["type"] == "string"
    assert definitions[f"{META}.Time"]["format"] == "date-time"
    status_gvks = definitions[f"{META}.Status"]["x-kubernetes-group-version-kind"]
    assert status_gvks == [{"group": "", "kind": "Status", "version": "v1"}]


def test_flattened_client_types_are_restored() -> None:
    definitions = _v2()["definitions"]
    core = "io.k8s.api.core.v1"
    int_or_string = "#/definitions/io.k8s.apimachinery.pkg.util.intstr.IntOrString"
    assert definitions[f"{core}.ServicePort"]["properties"]["targetPort"]["$ref"] == int_or_string
    rolling = definitions["io.k8s.api.apps.v1.RollingUpdateDeployment"]["properties"]
    assert rolling["maxSurge"]["$ref"] == int_or_string
    limits = definitions[f"{core}.ResourceRequirements"]["properties"]["limits"]
    assert limits["additionalProperties"] == {
        "$ref": "#/definitions/io.k8s.apimachinery.pkg.api.resource.Quantity"
    }
    secret_data = definitions[f"{core}.Secret"]["properties"]["data"]
    assert secret_data["additionalProperties"] == {"type": "string", "format": "byte"}
    lease = definitions["io.k8s.api.coordination.v1.LeaseSpec"]["properties"]
    assert lease["renewTime"]["$ref"] == f"#/definitions/{META}.MicroTime"


@pytest.mark.parametrize(
    ("definition", "field", "strategy", "key"),
    [
        ("io.k8s.api.core.v1.PodSpec", "containers", "merge", "name"),
        ("io.k8s.api.core.v1.PodSpec", "volumes", "merge,retainKeys", "name"),
        ("io.k8s.api.core.v1.Container", "ports", "merge", "containerPort"),
        ("io.k8s.api.core.v1.Container", "env", "merge", "name"),
        ("io.k8s.api.core.v1.Container", "volumeMounts", "merge", "mountPath"),
        ("io.k8s.api.core.v1.ServiceSpec", "ports", "merge", "port"),
        ("io.k8s.api.core.v1.PodStatus", "conditions", "merge", "type"),
        (f"{META}.ObjectMeta", "ownerReferences", "merge", "uid"),
        (f"{META}.ObjectMeta", "finalizers", "merge", None),
        ("io.k8s.api.apps.v1.DeploymentSpec", "strategy", "retainKeys", None),
    ],
)
def test_strategic_merge_patch_metadata(
    definition: str, field: str, strategy: str, key: str | None
) -> None:
    for schema in (
        _v2()["definitions"][definition],
        _v3("api/v1" if ".core." in definition or META in definition else "apis/apps/v1")[
            "components"
        ]["schemas"][definition],
    ):
        prop = schema["properties"][field]
        assert prop["x-kubernetes-patch-strategy"] == strategy
        assert prop.get("x-kubernetes-patch-merge-key") == key


def test_list_and_map_types() -> None:
    definitions = _v2()["definitions"]
    ports = definitions["io.k8s.api.core.v1.Container"]["properties"]["ports"]
    assert ports["x-kubernetes-list-type"] == "map"
    assert ports["x-kubernetes-list-map-keys"] == ["containerPort", "protocol"]
    finalizers = definitions[f"{META}.ObjectMeta"]["properties"]["finalizers"]
    assert finalizers["x-kubernetes-list-type"] == "set"
    assert definitions[f"{META}.LabelSelector"]["x-kubernetes-map-type"] == "atomic"


def test_v3_wraps_described_references_in_all_of() -> None:
    schemas = _v3("apis/apps/v1")["components"]["schemas"]
    spec = schemas["io.k8s.api.apps.v1.Deployment"]["properties"]["spec"]
    assert spec["allOf"] == [{"$ref": "#/components/schemas/io.k8s.api.apps.v1.DeploymentSpec"}]
    assert spec["description"] == "Specification of the desired behavior of the Deployment."
    replicas = schemas["io.k8s.api.apps.v1.DeploymentSpec"]["properties"]["replicas"]
    assert replicas["type"] == "integer"
    assert replicas["description"].startswith("Number of desired pods.")


def test_required_fields_follow_the_client_models() -> None:
    definitions = _v2()["definitions"]
    assert definitions["io.k8s.api.apps.v1.DeploymentSpec"]["required"] == ["selector", "template"]
    assert definitions["io.k8s.api.core.v1.Container"]["required"] == ["name"]
    assert "required" not in definitions["io.k8s.api.core.v1.Pod"]


def test_v3_documents_carry_only_what_their_group_needs() -> None:
    schemas = _v3("apis/coordination.k8s.io/v1")["components"]["schemas"]
    assert "io.k8s.api.coordination.v1.Lease" in schemas
    assert "io.k8s.api.core.v1.PodSpec" not in schemas
    assert f"{META}.Status" in schemas
    assert f"{META}.WatchEvent" in schemas
