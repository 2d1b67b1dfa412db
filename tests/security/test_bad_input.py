"""Bad input that used to reach the client as a 500 with a traceback: each gets a 400 or 422
Status, and the server keeps serving."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from k3py.cluster.server.app import create_app
from k3py.cluster.server.store import MemoryDatastore
from k3py.cluster.server.tunnel import NodeStream, exit_code, node_status
from tests.server.conftest import ADMIN, Api, TokenAuthenticator, serving, settings_for

CM = "/api/v1/namespaces/default/configmaps"
DEPLOY = "/apis/apps/v1/namespaces/default/deployments"


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    app = create_app(
        settings_for(tmp_path), MemoryDatastore(), TokenAuthenticator({"admin": ADMIN})
    )
    async with serving(app) as served:
        assert (await served.post(CM, {"metadata": {"name": "cm"}})).status == 201
        yield served


def _refused(reply: Any, code: int = 400) -> None:
    assert reply.status == code, (reply.status, reply.text[:300])
    assert reply.body["kind"] == "Status"
    assert "Traceback" not in reply.text


def _nested(depth: int, leaf: str = "1") -> bytes:
    return (
        '{"metadata": {"name": "deep"}, "data": ' + '{"a": ' * depth + leaf + "}" * depth + "}"
    ).encode()


async def test_deeply_nested_bodies(api: Api) -> None:
    _refused(await api.call("POST", CM, data=_nested(1_100)))
    yaml_deep = b"metadata:\n  name: deep\ndata: " + b"[" * 20_000 + b"]" * 20_000 + b"\n"
    _refused(await api.call("POST", CM, data=yaml_deep, content_type="application/yaml"))
    merge = b'{"data": ' + b'{"a": ' * 5_000 + b"1" + b"}" * 5_000 + b"}"
    _refused(
        await api.call("PATCH", f"{CM}/cm", data=merge, content_type="application/merge-patch+json")
    )
    strategic = b'{"data": ' + b'{"a": ' * 900 + b"1" + b"}" * 900 + b"}"
    _refused(
        await api.call(
            "PATCH",
            f"{CM}/cm",
            data=strategic,
            content_type="application/strategic-merge-patch+json",
        )
    )
    assert (await api.get("/healthz", token=None)).status == 200


@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity", "1e999"])
async def test_non_finite_numbers_in_integer_fields(api: Api, number: str) -> None:
    body = (
        '{"metadata": {"name": "d"}, "spec": {"replicas": ' + number + ', "selector": '
        '{"matchLabels": {"a": "b"}}, "template": {"metadata": {"labels": {"a": "b"}},'
        ' "spec": {"containers": [{"name": "c", "image": "i"}]}}}}'
    ).encode()
    _refused(await api.call("POST", DEPLOY, data=body))


async def test_lone_surrogates_in_strings(api: Api) -> None:
    for body in (
        b'{"metadata": {"name": "s"}, "data": {"k": "\\ud800"}}',
        b'{"metadata": {"name": "s", "labels": {"\\udfff": "v"}}}',
    ):
        _refused(await api.call("POST", CM, data=body))
    _refused(await api.patch(f"{CM}/cm", {"data": {"k": "\ud800"}}))
    paired = b'{"metadata": {"name": "smile"}, "data": {"k": "\\ud83d\\ude00"}}'
    assert (await api.call("POST", CM, data=paired)).status == 201


async def test_out_of_range_query_integers(api: Api) -> None:
    _refused(await api.get(f"{CM}?limit=9223372036854775808"))
    _refused(await api.get(f"{CM}?resourceVersion=99999999999999999999999"))
    assert (await api.get(f"{CM}?limit=9223372036854775807")).status == 200


async def test_binding_with_a_malformed_target(api: Api) -> None:
    pod = {
        "metadata": {"name": "p"},
        "spec": {"containers": [{"name": "c", "image": "i"}]},
    }
    assert (await api.post("/api/v1/namespaces/default/pods", pod)).status == 201
    path = "/api/v1/namespaces/default/pods/p/binding"
    for target in ([], [1], "node1", {"name": 5}, {"name": ["n"]}):
        body = {"metadata": {"name": "p"}, "target": target}
        _refused(await api.post(path, body), 422)
    bindings = "/api/v1/namespaces/default/bindings"
    _refused(await api.post(bindings, {"metadata": [], "target": {"name": "n"}}))


def test_node_status_codes_are_relayed_only_when_they_are_http_errors() -> None:
    assert node_status({"code": 999, "reason": "X", "message": "m"})["code"] == 502
    assert node_status({"code": "404"})["code"] == 502
    assert node_status({"code": 200})["code"] == 502
    assert node_status({"code": True})["code"] == 502
    assert node_status([1, 2])["code"] == 502
    assert node_status({"code": 404, "reason": "NotFound"}) == {
        "code": 404,
        "reason": "NotFound",
        "message": "",
    }
    assert exit_code("abc") == -1
    assert exit_code(2**40) == -1
    assert exit_code(3) == 3


async def test_malformed_exit_and_error_frames_end_the_stream_cleanly() -> None:
    stream = NodeStream(None, 1)  # type: ignore[arg-type]
    for item in (
        {"op": "exit", "code": "not a number"},
        {"op": "error", "status": "not a status"},
        {"op": "end"},
    ):
        stream.inbox.put_nowait(item)
    assert [chunk async for chunk in stream.output()] == []
    assert stream.exit_code == -1
    assert stream.error is not None
    assert stream.error["code"] == 502


def test_csr_tool_refuses_a_node_name_too_long_for_a_certificate(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "k3py.cluster.agent.node.csr", str(tmp_path / "k"), "n" * 60],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode != 0
    assert "at most 52 fit in a node certificate" in result.stderr
    assert not (tmp_path / "k").exists()


async def test_an_empty_field_name_does_not_drop_metadata(api: Api) -> None:
    """Found by the fuzzer: an unknown field named "" made the server drop all metadata."""
    body: dict[str, Any] = {"involvedObject": {}, "metadata": {"": []}}
    reply = await api.put("/api/v1/namespaces/default/events/e", body)
    assert reply.status in (400, 404, 422), reply.text
    reply = await api.post(CM, {"metadata": {"name": "empty-key", "": 1}})
    assert reply.status == 201, reply.text


async def test_warning_headers_are_bounded(api: Api) -> None:
    body: dict[str, Any] = {"metadata": {"name": "noisy"}}
    body.update({f"unknown{i}": i for i in range(20_000)})
    body["ünïcödé"] = 1
    reply = await api.post(CM, body)
    assert reply.status == 201
    header = reply.headers["Warning"]
    assert len(header) <= 4096
    assert header.count("299 -") == 11
    assert header.endswith('"and 19991 more warnings"')
