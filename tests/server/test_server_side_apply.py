"""Server-side apply with field ownership: the real kubectl and the official Python client."""

from __future__ import annotations

import json

import pytest

from tests.server.process import ServerProcess

pytestmark = pytest.mark.integration

NS = "ssa"


def _deployment(replicas: int, image: str = "nginx:1.25", **labels: str) -> str:
    return json.dumps(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web", "namespace": NS, "labels": {"app": "web", **labels}},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "web", "image": image}]},
                },
            },
        }
    )


def _managers(cluster: ServerProcess) -> dict[str, str]:
    obj = json.loads(
        cluster.kubectl(
            "get", "deploy", "web", "-n", NS, "-o", "json", "--show-managed-fields"
        ).stdout
    )
    return {e["manager"]: e["operation"] for e in obj["metadata"]["managedFields"]}


def test_two_managers_conflict_and_force(cluster: ServerProcess) -> None:
    cluster.kubectl("create", "namespace", NS)
    apply = ("apply", "--server-side", "-f", "-")
    cluster.kubectl(*apply, "--field-manager=alice", stdin=_deployment(2))
    assert _managers(cluster) == {"alice": "Apply"}
    plain = json.loads(cluster.kubectl("get", "deploy", "web", "-n", NS, "-o", "json").stdout)
    assert "managedFields" not in plain["metadata"]  # kubectl hides them unless asked
    # Bob sets a field of his own and the same value of one of Alice's: no conflict.
    cluster.kubectl(*apply, "--field-manager=bob", stdin=_deployment(2, team="blue"))
    assert _managers(cluster) == {"alice": "Apply", "bob": "Apply"}
    # Bob changing Alice's replicas is a conflict, as kube-apiserver reports it.
    refused = cluster.kubectl(*apply, "--field-manager=bob", stdin=_deployment(5), check=False)
    assert refused.returncode != 0
    assert 'conflict with "alice"' in refused.stderr
    assert ".spec.replicas" in refused.stderr
    assert (
        cluster.kubectl("get", "deploy", "web", "-n", NS, "-o", "jsonpath={.spec.replicas}").stdout
        == "2"
    )
    cluster.kubectl(*apply, "--field-manager=bob", "--force-conflicts", stdin=_deployment(5))
    assert (
        cluster.kubectl("get", "deploy", "web", "-n", NS, "-o", "jsonpath={.spec.replicas}").stdout
        == "5"
    )
    # Now Alice is the one in conflict over replicas.
    again = cluster.kubectl(*apply, "--field-manager=alice", stdin=_deployment(2), check=False)
    assert 'conflict with "bob"' in again.stderr


def test_client_side_apply_keeps_its_manager(cluster: ServerProcess) -> None:
    manifest = json.dumps(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "csa", "namespace": "default"},
            "data": {"a": "1"},
        }
    )
    cluster.kubectl("apply", "-f", "-", stdin=manifest)
    obj = json.loads(
        cluster.kubectl("get", "cm", "csa", "-o", "json", "--show-managed-fields").stdout
    )
    managers = [(e["manager"], e["operation"]) for e in obj["metadata"]["managedFields"]]
    assert managers == [("kubectl-client-side-apply", "Update")]
    conflict = cluster.kubectl(
        "apply", "--server-side", "-f", "-", check=False,
        stdin=manifest.replace('"1"', '"2"'),
    )  # fmt: skip
    assert 'conflict with "kubectl-client-side-apply"' in conflict.stderr
    assert ".data.a" in conflict.stderr


def test_official_client_server_side_apply(cluster: ServerProcess) -> None:
    kubernetes = pytest.importorskip("kubernetes")
    client = kubernetes.config.new_client_from_config(str(cluster.kubeconfig))
    dynamic = kubernetes.dynamic.DynamicClient(client)
    api = dynamic.resources.get(api_version="v1", kind="ConfigMap")
    body = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "from-python", "namespace": "default"},
        "data": {"k": "v"},
    }
    applied = api.server_side_apply(body=body, field_manager="python", namespace="default")
    assert applied.data.k == "v"
    fields = applied.metadata.managedFields[0]
    assert (fields.manager, fields.operation) == ("python", "Apply")
    assert fields.fieldsV1.to_dict() == {"f:data": {"f:k": {}}}
    body["data"] = {"k": "w"}
    with pytest.raises(kubernetes.client.exceptions.ApiException) as refused:
        api.server_side_apply(body=body, field_manager="other", namespace="default")
    assert refused.value.status == 409
    forced = api.server_side_apply(
        body=body, field_manager="other", namespace="default", force_conflicts=True
    )
    assert forced.data.k == "w"


def test_fields_an_applier_stops_applying_are_removed_unless_another_owns_them(
    cluster: ServerProcess,
) -> None:
    def config(data: dict[str, str], labels: dict[str, str]) -> str:
        return json.dumps({"apiVersion": "v1", "kind": "ConfigMap",
                           "metadata": {"name": "drop", "namespace": "default", "labels": labels},
                           "data": data})  # fmt: skip

    def live() -> dict[str, object]:
        obj = json.loads(cluster.kubectl("get", "cm", "drop", "-o", "json").stdout)
        return {"data": obj.get("data"), "labels": obj["metadata"].get("labels")}

    apply = ("apply", "--server-side", "-f", "-")
    cluster.kubectl(*apply, "--field-manager=alice",
                    stdin=config({"a": "1", "b": "2", "c": "3"}, {"x": "1", "y": "2"}))  # fmt: skip
    # Bob applies c with the same value: a shared field.
    cluster.kubectl(*apply, "--field-manager=bob", stdin=config({"c": "3"}, {}))
    # Alice no longer applies b, c and label y: b and y go, c stays (Bob owns it).
    cluster.kubectl(*apply, "--field-manager=alice", stdin=config({"a": "1"}, {"x": "1"}))
    assert live() == {"data": {"a": "1", "c": "3"}, "labels": {"x": "1"}}
    # A container Alice stopped applying leaves the Deployment's list; the other stays.
    containers = [{"name": "web", "image": "nginx:1.25"}, {"name": "side", "image": "busybox"}]
    deployment = json.loads(_deployment(1))
    deployment["metadata"]["namespace"] = "default"
    deployment["spec"]["template"]["spec"]["containers"] = containers
    cluster.kubectl(*apply, "--field-manager=alice", stdin=json.dumps(deployment))
    deployment["spec"]["template"]["spec"]["containers"] = containers[:1]
    cluster.kubectl(*apply, "--field-manager=alice", stdin=json.dumps(deployment))
    got = cluster.kubectl("get", "deploy", "web", "-o",
                          "jsonpath={.spec.template.spec.containers[*].name}").stdout  # fmt: skip
    assert got == "web"
