"""Protobuf request bodies, as kubectl's typed commands send them, decode to the JSON form."""

from __future__ import annotations

from tests.server.conftest import Api


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def field(number: int, value: int | bytes | str) -> bytes:
    if isinstance(value, int):
        return _varint(number << 3) + _varint(value)
    data = value.encode() if isinstance(value, str) else value
    return _varint(number << 3 | 2) + _varint(len(data)) + data


def envelope(api_version: str, kind: str, raw: bytes) -> bytes:
    type_meta = field(1, api_version) + field(2, kind)
    return b"k8s\x00" + field(1, type_meta) + field(2, raw)


def meta(name: str) -> bytes:
    # Go's encoder writes every non-pointer field, zero or not: name, generateName, namespace...
    return field(1, name) + field(2, "") + field(3, "") + field(8, b"") + field(4, "")


PROTOBUF = "application/vnd.kubernetes.protobuf"


async def test_config_map(api: Api) -> None:
    data = field(2, field(1, "color") + field(2, "blue")) + field(
        2, field(1, "size") + field(2, "")
    )
    body = envelope("v1", "ConfigMap", field(1, meta("pb")) + data)
    reply = await api.call(
        "POST", "/api/v1/namespaces/default/configmaps", data=body, content_type=PROTOBUF
    )
    assert reply.status == 201, reply.body
    assert reply.body["data"] == {"color": "blue", "size": ""}
    assert reply.body["metadata"]["name"] == "pb"
    assert "generateName" not in reply.body["metadata"]  # zero values left out, as omitempty


async def test_deployment_keeps_an_explicit_zero_and_typed_values(api: Api) -> None:
    labels = field(1, field(1, "app") + field(2, "web"))  # LabelSelector.matchLabels
    resources = field(2, field(1, "cpu") + field(2, field(1, "250m")))  # requests
    port = field(3, 8080) + field(6, "TCP")  # containerPort, protocol
    container = field(1, "web") + field(2, "nginx:1.25") + field(6, port) + field(8, resources)
    pod_spec = field(2, container) + field(3, "")  # restartPolicy left empty
    template = field(1, field(11, field(1, "app") + field(2, "web"))) + field(2, pod_spec)
    spec = field(1, 0) + field(2, labels) + field(3, template) + field(5, 0)
    body = envelope("apps/v1", "Deployment", field(1, meta("pbd")) + field(2, spec))
    reply = await api.call(
        "POST", "/apis/apps/v1/namespaces/default/deployments", data=body, content_type=PROTOBUF
    )
    assert reply.status == 201, reply.body
    spec_json = reply.body["spec"]
    assert spec_json["replicas"] == 0  # a pointer set to zero stays zero
    assert "minReadySeconds" not in spec_json
    (container_json,) = spec_json["template"]["spec"]["containers"]
    assert container_json["ports"] == [{"containerPort": 8080, "protocol": "TCP"}]
    assert container_json["resources"] == {"requests": {"cpu": "250m"}}


async def test_service_int_or_string_target_port(api: Api) -> None:
    by_number = field(1, 0) + field(2, 8080)
    by_name = field(1, 1) + field(3, "metrics")
    ports = field(1, field(1, "http") + field(3, 80) + field(4, by_number)) + field(
        1, field(1, "m") + field(3, 9090) + field(4, by_name)
    )
    body = envelope("v1", "Service", field(1, meta("pbs")) + field(2, ports))
    reply = await api.call(
        "POST", "/api/v1/namespaces/default/services", data=body, content_type=PROTOBUF
    )
    assert reply.status == 201, reply.body
    assert [p["targetPort"] for p in reply.body["spec"]["ports"]] == [8080, "metrics"]


async def test_malformed_protobuf_is_a_bad_request(api: Api) -> None:
    path = "/api/v1/namespaces/default/configmaps"
    for body in (b"not protobuf", b"k8s\x00\x0a\xff", envelope("v1", "Widget", b"")):
        reply = await api.call("POST", path, data=body, content_type=PROTOBUF)
        assert reply.status in (400, 415), body
        assert reply.body["kind"] == "Status"
