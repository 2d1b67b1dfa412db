"""Create, read, update and patch: the object semantics clients rely on."""

from __future__ import annotations

from typing import Any

from tests.server.conftest import Api

CM = "/api/v1/namespaces/default/configmaps"
DEPLOYMENTS = "/apis/apps/v1/namespaces/default/deployments"


def configmap(name: str, **data: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data}


def deployment(name: str, image: str = "nginx:1.25", replicas: int = 1) -> dict[str, Any]:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [
                        {
                            "name": "web",
                            "image": image,
                            "ports": [{"containerPort": 80}],
                            "env": [{"name": "MODE", "value": "prod"}],
                        }
                    ]
                },
            },
        },
    }


async def test_create_sets_server_metadata_and_get_returns_it(api: Api) -> None:
    created = await api.post(CM, configmap("one", a="1"))
    assert created.status == 201
    meta = created.body["metadata"]
    assert meta["namespace"] == "default"
    assert meta["uid"]
    assert meta["creationTimestamp"].endswith("Z")
    assert meta["generation"] == 1
    assert int(meta["resourceVersion"]) > 0
    fetched = await api.get(f"{CM}/one")
    assert fetched.body == created.body


async def test_generate_name_and_dry_run(api: Api) -> None:
    generated = await api.post(CM, {"metadata": {"generateName": "gen-"}, "data": {}})
    assert generated.status == 201
    name = generated.body["metadata"]["name"]
    assert name.startswith("gen-")
    assert len(name) == len("gen-") + 5
    dry = await api.post(f"{CM}?dryRun=All", configmap("dry"))
    assert dry.status == 201
    assert (await api.get(f"{CM}/dry")).status == 404


async def test_create_refusals(api: Api) -> None:
    assert (await api.post(CM, configmap("dup"))).status == 201
    duplicate = await api.post(CM, configmap("dup"))
    assert (duplicate.status, duplicate.body["reason"]) == (409, "AlreadyExists")
    missing_ns = await api.post("/api/v1/namespaces/nowhere/configmaps", configmap("x"))
    assert missing_ns.status == 404
    assert missing_ns.body["details"]["kind"] == "namespaces"
    wrong_kind = await api.post(CM, {**configmap("x"), "kind": "Secret"})
    assert wrong_kind.status == 400
    bad_name = await api.post(CM, configmap("Not_A_Name"))
    assert bad_name.status == 422
    assert bad_name.body["details"]["causes"][0]["field"] == "metadata.name"
    other_ns = await api.post(
        CM, {**configmap("x"), "metadata": {"name": "x", "namespace": "kube-system"}}
    )
    assert other_ns.status == 400


async def test_stale_update_is_a_conflict(api: Api) -> None:
    first = (await api.post(CM, configmap("c", a="1"))).body
    second = {**first, "data": {"a": "2"}}
    assert (await api.put(f"{CM}/c", second)).status == 200
    stale = await api.put(f"{CM}/c", {**first, "data": {"a": "3"}})
    assert stale.status == 409
    assert stale.body["reason"] == "Conflict"
    assert stale.body["message"].endswith(
        "the object has been modified; please apply your changes to the latest version and try"
        " again"
    )
    unconditional = {**first, "data": {"a": "4"}}
    del unconditional["metadata"]["resourceVersion"]
    assert (await api.put(f"{CM}/c", unconditional)).body["data"] == {"a": "4"}


async def test_update_that_changes_nothing_keeps_the_resource_version(api: Api) -> None:
    created = (await api.post(CM, configmap("same", a="1"))).body
    again = await api.put(f"{CM}/same", created)
    assert again.body["metadata"]["resourceVersion"] == created["metadata"]["resourceVersion"]


async def test_generation_grows_with_the_spec_only(api: Api) -> None:
    created = (await api.post(DEPLOYMENTS, deployment("gen"))).body
    labelled = await api.patch(f"{DEPLOYMENTS}/gen", {"metadata": {"labels": {"x": "y"}}})
    assert labelled.body["metadata"]["generation"] == 1
    scaled = await api.patch(f"{DEPLOYMENTS}/gen", {"spec": {"replicas": 3}})
    assert scaled.body["metadata"]["generation"] == 2
    assert created["status"] == {}


async def test_status_subresource_splits_spec_and_status(api: Api) -> None:
    await api.post(DEPLOYMENTS, deployment("split"))
    via_main = await api.patch(
        f"{DEPLOYMENTS}/split", {"spec": {"replicas": 2}, "status": {"replicas": 9}}
    )
    assert via_main.body["spec"]["replicas"] == 2
    assert via_main.body["status"].get("replicas") is None
    via_status = await api.patch(
        f"{DEPLOYMENTS}/split/status", {"spec": {"replicas": 7}, "status": {"replicas": 2}}
    )
    assert via_status.status == 200
    assert via_status.body["spec"]["replicas"] == 2
    assert via_status.body["status"]["replicas"] == 2
    assert via_status.body["metadata"]["generation"] == 2


async def test_strategic_merge_patch_changes_one_container_by_name(api: Api) -> None:
    await api.post(DEPLOYMENTS, deployment("smp"))
    patch = {
        "spec": {"template": {"spec": {"containers": [{"name": "web", "image": "nginx:1.26"}]}}}
    }
    patched = await api.patch(f"{DEPLOYMENTS}/smp", patch, kind="strategic")
    assert patched.status == 200
    (container,) = patched.body["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "nginx:1.26"
    assert container["env"] == [{"name": "MODE", "value": "prod"}]
    assert container["ports"][0]["containerPort"] == 80


async def test_json_and_merge_patches(api: Api) -> None:
    await api.post(CM, configmap("p", a="1", b="2"))
    merged = await api.patch(f"{CM}/p", {"data": {"a": None, "c": "3"}})
    assert merged.body["data"] == {"b": "2", "c": "3"}
    ops = [{"op": "replace", "path": "/data/b", "value": "20"}, {"op": "remove", "path": "/data/c"}]
    assert (await api.patch(f"{CM}/p", ops, kind="json")).body["data"] == {"b": "20"}
    failed = await api.patch(
        f"{CM}/p", [{"op": "test", "path": "/data/b", "value": "x"}], kind="json"
    )
    assert failed.status == 422
    stale = await api.patch(f"{CM}/p", {"metadata": {"resourceVersion": "1"}, "data": {"b": "x"}})
    assert stale.status == 409


async def test_unsupported_patch_types(api: Api) -> None:
    await api.post(CM, configmap("q"))
    other = await api.call("PATCH", f"{CM}/q", {"data": {}}, content_type="text/plain")
    assert other.status == 415
    missing = await api.patch(f"{CM}/none", {"data": {}})
    assert missing.status == 404


async def test_server_side_apply_creates_then_merges(api: Api) -> None:
    apply = "application/apply-patch+yaml"
    anonymous = await api.call("PATCH", f"{CM}/ssa", configmap("ssa"), content_type=apply)
    assert anonymous.status == 400  # a field manager is required
    path = f"{CM}/ssa?fieldManager=kubectl"
    first = await api.call("PATCH", path, configmap("ssa", a="1"), content_type=apply)
    assert first.status == 201
    same = await api.call("PATCH", path, configmap("ssa", a="1"), content_type=apply)
    assert same.body["metadata"]["resourceVersion"] == first.body["metadata"]["resourceVersion"]
    yaml_body = b"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: ssa}\ndata: {b: '2'}\n"
    merged = await api.call("PATCH", path, data=yaml_body, content_type=apply)
    assert merged.body["data"] == {"b": "2"}  # the same manager stopped applying a: removed


async def test_field_validation(api: Api) -> None:
    body = deployment("fv")
    body["spec"]["replicaz"] = 3
    strict = await api.post(f"{DEPLOYMENTS}?fieldValidation=Strict", body)
    assert strict.status == 400
    assert 'unknown field "spec.replicaz"' in strict.body["message"]
    warned = await api.post(f"{DEPLOYMENTS}?fieldValidation=Warn", body)
    assert warned.status == 201
    assert 'unknown field \\"spec.replicaz\\"' in warned.headers["Warning"]
    assert "replicaz" not in warned.body["spec"]
    ignored = await api.post(
        f"{DEPLOYMENTS}?fieldValidation=Ignore", {**body, "metadata": {"name": "fv2"}}
    )
    assert ignored.status == 201
    assert "Warning" not in ignored.headers
    duplicate = await api.call(
        "POST",
        f"{CM}?fieldValidation=Strict",
        data=b'{"metadata": {"name": "d"}, "data": {"a": "1", "a": "2"}}',
    )
    assert duplicate.status == 400
    assert 'duplicate field "a"' in duplicate.body["message"]
    bad = await api.post(f"{CM}?fieldValidation=Loose", configmap("v"))
    assert bad.status == 400


async def test_immutable_fields_are_refused(api: Api) -> None:
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "frozen"},
        "immutable": True,
        "data": {"k": "dg=="},
    }
    assert (await api.post("/api/v1/namespaces/default/secrets", secret)).status == 201
    changed = await api.patch("/api/v1/namespaces/default/secrets/frozen", {"data": {"k": "dw=="}})
    assert changed.status == 422
    assert changed.body["reason"] == "Invalid"
    await api.post(DEPLOYMENTS, deployment("sel"))
    selector = {"spec": {"selector": {"matchLabels": {"app": "other"}}}}
    assert (await api.patch(f"{DEPLOYMENTS}/sel", selector)).status == 422


async def test_yaml_bodies_are_accepted_and_bad_ones_refused(api: Api) -> None:
    good = b"metadata:\n  name: from-yaml\ndata:\n  a: '1'\n"
    reply = await api.call("POST", CM, data=good, content_type="application/yaml")
    assert reply.status == 201
    bad = await api.call("POST", CM, data=b"metadata: [unclosed", content_type="application/yaml")
    assert bad.status == 400
    broken = await api.call("POST", CM, data=b'{"metadata": ')
    assert (broken.status, broken.body["kind"]) == (400, "Status")
    protobuf = await api.call(
        "POST", CM, data=b"\x00k8s", content_type="application/vnd.kubernetes.protobuf"
    )
    assert (protobuf.status, protobuf.body["reason"]) == (400, "BadRequest")


async def test_request_bodies_over_three_mebibytes_are_refused(api: Api) -> None:
    big = configmap("big", blob="x" * (3 * 1024 * 1024))
    reply = await api.post(CM, big)
    assert reply.status == 413
    assert reply.body["reason"] == "RequestEntityTooLarge"
    assert (await api.get("/api/v1/namespaces")).status == 200


async def test_services_get_cluster_ips_kept_across_replace(api: Api) -> None:
    svc: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]},
    }
    created = await api.post("/api/v1/namespaces/default/services", svc)
    ip = created.body["spec"]["clusterIP"]
    assert ip.startswith("10.43.")
    assert ip != "10.43.0.1"
    replaced = await api.put("/api/v1/namespaces/default/services/web", svc)
    assert replaced.status == 200
    assert replaced.body["spec"]["clusterIP"] == ip
    taken = {**svc, "metadata": {"name": "web2"}, "spec": {**svc["spec"], "clusterIP": ip}}
    assert (await api.post("/api/v1/namespaces/default/services", taken)).status == 422
    kubernetes = await api.get("/api/v1/namespaces/default/services/kubernetes")
    assert kubernetes.body["spec"]["clusterIP"] == "10.43.0.1"


async def test_system_namespaces_and_default_service_accounts(api: Api) -> None:
    names = [n["metadata"]["name"] for n in (await api.get("/api/v1/namespaces")).body["items"]]
    assert names == ["default", "kube-node-lease", "kube-public", "kube-system"]
    await api.post("/api/v1/namespaces", {"metadata": {"name": "team"}})
    account = await api.get("/api/v1/namespaces/team/serviceaccounts/default")
    assert account.status == 200


async def test_wrong_value_types_are_bad_requests(api: Api) -> None:
    wrong = [
        (CM, {"metadata": {"name": "t1"}, "data": {"a": 1}}, "ConfigMap.data"),
        (CM, {"metadata": {"name": ["t2"]}}, "ObjectMeta.name"),
        (DEPLOYMENTS, {**deployment("t3"), "spec": 1}, "Deployment.spec"),
        (
            "/api/v1/namespaces/default/services",
            {"metadata": {"name": "t4"}, "spec": {"ports": [{"port": "eighty"}]}},
            "ServicePort.port",
        ),
    ]
    for path, body, where in wrong:
        reply = await api.post(path, body)
        assert reply.status == 400, body
        assert f"Go struct field {where}" in reply.body["message"]
    nulls = await api.post(DEPLOYMENTS, {**deployment("t5"), "status": None})
    assert nulls.status == 201  # null means "not set", as a typed decoder reads it
    patched = await api.patch(f"{DEPLOYMENTS}/t5", {"spec": {"replicas": "many"}})
    assert patched.status == 400
