"""Bad input to a real ``k3py server``: each gets the right Status, none a 500, and the server
keeps serving."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.server.process import ServerProcess

pytestmark = pytest.mark.integration

CM = "/api/v1/namespaces/default/configmaps"
MEGABYTE = 1024 * 1024


def _status(reply: tuple[int, object]) -> tuple[int, str]:
    code, body = reply
    assert isinstance(body, dict), body
    assert body["kind"] == "Status"
    assert body["code"] == code
    return code, str(body["reason"])


def test_malformed_bodies(cluster: ServerProcess) -> None:
    assert _status(cluster.request("POST", CM, data=b'{"metadata": {"name": "x"')) == (
        400,
        "BadRequest",
    )
    assert _status(cluster.request("POST", CM, data=b"[1, 2, 3]")) == (400, "BadRequest")
    yaml_reply = cluster.request(
        "POST", CM, data=b"metadata:\n  name: [x\n", content_type="application/yaml"
    )
    assert _status(yaml_reply) == (400, "BadRequest")
    bad_patch = cluster.request(
        "PATCH", f"{CM}/nothing", data=b"{not json", content_type="application/merge-patch+json"
    )
    assert bad_patch[0] in (400, 404)


def test_kind_that_does_not_match_the_path(cluster: ServerProcess) -> None:
    deployment = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"}}
    assert _status(cluster.request("POST", CM, deployment)) == (400, "BadRequest")


def test_ten_megabyte_bodies(cluster: ServerProcess) -> None:
    blob = json.dumps({"metadata": {"name": "big"}, "data": {"x": "y" * (10 * MEGABYTE)}})
    assert _status(cluster.request("POST", CM, data=blob.encode())) == (
        413,
        "RequestEntityTooLarge",
    )

    def chunks() -> Iterator[bytes]:
        yield b'{"metadata": {"name": "big"}, "data": {"x": "'
        for _ in range(10):
            yield b"y" * MEGABYTE
        yield b'"}}'

    conn = cluster.connection()
    try:
        conn.request(
            "POST",
            CM,
            body=chunks(),
            headers={"Content-Type": "application/json"},
            encode_chunked=True,
        )
        response = conn.getresponse()
        body = json.loads(response.read())
    finally:
        conn.close()
    assert (response.status, body["reason"]) == (413, "RequestEntityTooLarge")


def test_invalid_names(cluster: ServerProcess) -> None:
    for name in ("Upper", "under_score", "-leading", "x" * 254):
        reply = cluster.request("POST", CM, {"metadata": {"name": name}})
        assert _status(reply) == (422, "Invalid"), name
        causes = reply[1]["details"]["causes"]
        assert causes[0]["field"] == "metadata.name"
    namespace = cluster.request("POST", "/api/v1/namespaces", {"metadata": {"name": "a.b"}})
    assert _status(namespace) == (422, "Invalid")


def test_stale_resource_version(cluster: ServerProcess) -> None:
    code, created = cluster.request("POST", CM, {"metadata": {"name": "stale"}, "data": {}})
    assert code == 201
    assert isinstance(created, dict)
    assert cluster.request("PUT", f"{CM}/stale", {**created, "data": {"a": "1"}})[0] == 200
    assert _status(cluster.request("PUT", f"{CM}/stale", {**created, "data": {"a": "2"}})) == (
        409,
        "Conflict",
    )
    not_a_number = {**created, "metadata": {**created["metadata"], "resourceVersion": "abc"}}
    assert cluster.request("PUT", f"{CM}/stale", not_a_number)[0] == 400


def test_change_to_an_immutable_field(cluster: ServerProcess) -> None:
    service = {
        "metadata": {"name": "fixed"},
        "spec": {"ports": [{"port": 80}], "selector": {"app": "x"}},
    }
    code, created = cluster.request("POST", "/api/v1/namespaces/default/services", service)
    assert code == 201
    assert isinstance(created, dict)
    ip = created["spec"]["clusterIP"]
    other = "10.43.0.200" if ip != "10.43.0.200" else "10.43.0.201"
    reply = cluster.request(
        "PATCH",
        "/api/v1/namespaces/default/services/fixed",
        {"spec": {"clusterIP": other, "clusterIPs": [other]}},
        content_type="application/merge-patch+json",
    )
    assert _status(reply) == (422, "Invalid")
    assert "may not change once set" in reply[1]["message"]
    selector = {"matchLabels": {"app": "a"}}
    deployment = {
        "metadata": {"name": "fixed"},
        "spec": {
            "selector": selector,
            "template": {
                "metadata": {"labels": {"app": "a"}},
                "spec": {"containers": [{"name": "c", "image": "busybox"}]},
            },
        },
    }
    path = "/apis/apps/v1/namespaces/default/deployments"
    assert cluster.request("POST", path, deployment)[0] == 201
    moved = cluster.request(
        "PATCH",
        f"{path}/fixed",
        {"spec": {"selector": {"matchLabels": {"app": "b"}}}},
        content_type="application/merge-patch+json",
    )
    assert _status(moved) == (422, "Invalid")
    assert "field is immutable" in moved[1]["message"]


def test_the_server_keeps_serving(cluster: ServerProcess) -> None:
    assert cluster.running
    assert cluster.request("GET", "/readyz")[0] == 200
    code, listed = cluster.request("GET", CM)
    assert code == 200
    assert isinstance(listed, dict)
    assert listed["kind"] == "ConfigMapList"
    assert "Traceback" not in cluster.log()
