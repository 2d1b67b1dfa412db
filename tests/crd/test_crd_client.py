"""Custom resources through the official Python client: a cluster-scoped CRD created with
ApiextensionsV1Api, then objects created, listed (with a field selector), patched, given a
status, and refused by the schema through CustomObjectsApi; an unserved version is 404."""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.server.process import ServerProcess

pytestmark = pytest.mark.integration

GROUP = "edge.k3py.test"


def _crd() -> dict[str, Any]:
    schema = {
        "type": "object",
        "properties": {
            "spec": {
                "type": "object",
                "properties": {
                    "board": {"type": "string", "pattern": "^[a-z0-9-]+$"},
                    "cores": {"type": "integer", "minimum": 1, "default": 4},
                    "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                },
            },
            "status": {"type": "object", "properties": {"seen": {"type": "boolean"}}},
        },
    }
    version = {"served": True, "schema": {"openAPIV3Schema": schema}}
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"devices.{GROUP}"},
        "spec": {
            "group": GROUP,
            "scope": "Cluster",
            "names": {"plural": "devices", "singular": "device", "kind": "Device"},
            "versions": [
                {**version, "name": "v1", "storage": True, "subresources": {"status": {}}},
                {**version, "name": "v1alpha1", "served": False, "storage": False},
            ],
        },
    }


def test_custom_objects_with_the_python_client(server: ServerProcess) -> None:
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    with server.api_client() as api_client:
        extensions = client.ApiextensionsV1Api(api_client)
        extensions.create_custom_resource_definition(_crd())
        deadline = time.monotonic() + 20
        while True:
            crd = extensions.read_custom_resource_definition(f"devices.{GROUP}")
            conditions = {c.type: c.status for c in crd.status.conditions or []}
            if conditions.get("Established") == "True":
                break
            assert time.monotonic() < deadline, "the CRD was never Established"
            time.sleep(0.1)
        assert conditions["NamesAccepted"] == "True"
        assert crd.status.accepted_names.kind == "Device"
        assert crd.status.stored_versions == ["v1"]

        objects = client.CustomObjectsApi(api_client)
        for name in ("pi-1", "pi-2"):
            body = {
                "apiVersion": f"{GROUP}/v1",
                "kind": "Device",
                "metadata": {"name": name},
                "spec": {"board": "rpi4", "labels": {"ring": "field"}, "colour": "red"},
            }
            created = objects.create_cluster_custom_object(GROUP, "v1", "devices", body)
            assert created["spec"] == {"board": "rpi4", "cores": 4, "labels": {"ring": "field"}}
        listed = objects.list_cluster_custom_object(GROUP, "v1", "devices")
        assert [o["metadata"]["name"] for o in listed["items"]] == ["pi-1", "pi-2"]
        assert listed["kind"] == "DeviceList"
        one = objects.list_cluster_custom_object(
            GROUP, "v1", "devices", field_selector="metadata.name=pi-2"
        )
        assert [o["metadata"]["name"] for o in one["items"]] == ["pi-2"]

        patched = objects.patch_cluster_custom_object(
            GROUP, "v1", "devices", "pi-1", {"spec": {"cores": 2}}
        )
        assert patched["spec"]["cores"] == 2
        assert patched["metadata"]["generation"] == 2
        with_status = objects.patch_cluster_custom_object_status(
            GROUP, "v1", "devices", "pi-1", {"status": {"seen": True}}
        )
        assert with_status["status"] == {"seen": True}
        assert with_status["metadata"]["generation"] == 2

        with pytest.raises(ApiException) as refused:
            objects.patch_cluster_custom_object(
                GROUP, "v1", "devices", "pi-1", {"spec": {"cores": 0, "board": "Pi 4"}}
            )
        assert refused.value.status == 422
        assert "spec.cores in body should be greater than or equal to 1" in refused.value.body
        assert "spec.board in body should match '^[a-z0-9-]+$'" in refused.value.body

        # A schema change applies to the next writes.
        path = f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/devices.{GROUP}"
        cores = "/spec/versions/0/schema/openAPIV3Schema/properties/spec/properties/cores"
        changed = [{"op": "add", "path": f"{cores}/maximum", "value": 8}]
        status, _ = server.request(
            "PATCH", path, changed, content_type="application/json-patch+json"
        )
        assert status == 200
        deadline = time.monotonic() + 20
        refusal = ""
        while not refusal:
            try:
                objects.patch_cluster_custom_object(
                    GROUP, "v1", "devices", "pi-2", {"spec": {"cores": 9}}
                )
            except ApiException as err:
                refusal = str(err.body)
            assert time.monotonic() < deadline, "the new schema was never applied"
            time.sleep(0.1)
        assert "spec.cores in body should be less than or equal to 8" in refusal

        with pytest.raises(ApiException) as unserved:
            objects.list_cluster_custom_object(GROUP, "v1alpha1", "devices")
        assert unserved.value.status == 404

        extensions.delete_custom_resource_definition(f"devices.{GROUP}")
        deadline = time.monotonic() + 20
        while server.request("GET", path)[0] != 404:
            assert time.monotonic() < deadline, "the CRD was never deleted"
            time.sleep(0.1)
        status, _ = server.request("GET", f"/apis/{GROUP}/v1/devices/pi-1")
        assert status == 404


def test_aggregated_discovery_lists_custom_resources(server: ServerProcess) -> None:
    body = {**_crd(), "metadata": {"name": f"devices.{GROUP}"}}
    body["spec"]["versions"][0]["subresources"] = {"status": {}}
    assert (
        server.request("POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", body)[0]
        == 201
    )
    accept = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json"
    deadline = time.monotonic() + 20
    try:
        while True:
            status, document = server.request("GET", "/apis", headers={"Accept": accept})
            assert status == 200
            groups = {item["metadata"]["name"]: item for item in document["items"]}
            if GROUP in groups:
                break
            assert time.monotonic() < deadline, "the CRD's group never appeared"
            time.sleep(0.1)
        assert document["kind"] == "APIGroupDiscoveryList"
        (version,) = groups[GROUP]["versions"]  # v1alpha1 is not served
        (resource,) = version["resources"]
        assert resource["resource"] == "devices"
        assert resource["scope"] == "Cluster"
        assert resource["responseKind"] == {"group": GROUP, "version": "v1", "kind": "Device"}
        assert resource["subresources"] == [
            {
                "subresource": "status",
                "responseKind": {"group": GROUP, "version": "v1", "kind": "Device"},
                "verbs": ["get", "patch", "update"],
            }
        ]
        apps = groups["apps"]["versions"][0]["resources"]
        deployments = next(r for r in apps if r["resource"] == "deployments")
        scale = next(s for s in deployments["subresources"] if s["subresource"] == "scale")
        assert scale["responseKind"] == {"group": "autoscaling", "version": "v1", "kind": "Scale"}
        status, core = server.request("GET", "/api", headers={"Accept": accept})
        assert status == 200
        assert core["items"][0]["versions"][0]["version"] == "v1"
        status, legacy = server.request("GET", "/api")  # plain JSON still gets APIVersions
        assert legacy["kind"] == "APIVersions"
    finally:
        server.request(
            "DELETE", f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/devices.{GROUP}"
        )
