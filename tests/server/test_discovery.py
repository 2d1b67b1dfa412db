"""Discovery, version and health: what kubectl reads before anything else."""

from __future__ import annotations

from tests.server.conftest import Api


async def test_core_resources_list_subresources_with_their_kinds(api: Api) -> None:
    reply = await api.get("/api/v1")
    assert reply.status == 200
    entries = {r["name"]: r for r in reply.body["resources"]}
    assert entries["pods"]["shortNames"] == ["po"]
    assert entries["pods"]["categories"] == ["all"]
    assert entries["pods"]["namespaced"] is True
    assert "watch" in entries["pods"]["verbs"]
    assert entries["pods/status"]["kind"] == "Pod"
    assert sorted(entries["pods/status"]["verbs"]) == ["get", "patch", "update"]
    assert entries["pods/binding"]["verbs"] == ["create"]
    assert entries["namespaces"]["namespaced"] is False


async def test_scale_subresource_is_an_autoscaling_scale(api: Api) -> None:
    reply = await api.get("/apis/apps/v1")
    scale = next(r for r in reply.body["resources"] if r["name"] == "deployments/scale")
    assert (scale["group"], scale["version"], scale["kind"]) == ("autoscaling", "v1", "Scale")


async def test_groups_and_versions(api: Api) -> None:
    core = await api.get("/api")
    assert core.body["versions"] == ["v1"]
    groups = (await api.get("/apis")).body["groups"]
    names = [g["name"] for g in groups]
    assert names == [
        "apps",
        "batch",
        "coordination.k8s.io",
        "rbac.authorization.k8s.io",
        "authorization.k8s.io",
        "authentication.k8s.io",
        "policy",
        "ota.k3py.io",
        "apiextensions.k8s.io",  # the CRD kind, then the custom groups of established CRDs
        "metrics.k8s.io",
    ]
    assert groups[0]["preferredVersion"] == {"groupVersion": "apps/v1", "version": "v1"}
    assert (await api.get("/apis/batch")).body["name"] == "batch"
    assert (await api.get("/apis/nope/v1")).status == 404


async def test_version_and_health_are_anonymous(api: Api) -> None:
    version = await api.get("/version", token=None)
    assert version.status == 200
    assert version.body["gitVersion"].startswith("v1.32.")
    assert version.body["platform"].startswith("linux/")
    for path in ("/healthz", "/livez", "/readyz"):
        reply = await api.get(path, token=None)
        assert (reply.status, reply.text) == (200, "ok")


async def test_anything_else_needs_credentials(api: Api) -> None:
    reply = await api.get("/api/v1/namespaces", token=None)
    assert reply.status == 401
    assert reply.body["kind"] == "Status"
    assert reply.body["reason"] == "Unauthorized"
    assert (await api.get("/api", token="wrong")).status == 401


async def test_unknown_paths_are_404_statuses(api: Api) -> None:
    for path in ("/api/v1/widgets", "/apis/apps/v1/namespaces/x/widgets", "/nothing/here"):
        reply = await api.get(path)
        assert reply.status == 404, path
        assert reply.body["kind"] == "Status"
