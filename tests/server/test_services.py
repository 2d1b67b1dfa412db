"""Services on the API server: the cluster DNS Service from the first start, nodePort allocation."""

from __future__ import annotations

from typing import Any

from tests.server.conftest import Api

SVC = "/api/v1/namespaces/default/services"


def node_port_service(name: str, node_port: int | None = None) -> dict[str, Any]:
    port: dict[str, Any] = {"name": "http", "port": 80, "protocol": "TCP"}
    if node_port is not None:
        port["nodePort"] = node_port
    return {"metadata": {"name": name}, "spec": {"type": "NodePort", "ports": [port]}}


async def test_kube_dns_exists_at_the_tenth_address(api: Api) -> None:
    dns = await api.get("/api/v1/namespaces/kube-system/services/kube-dns")
    assert dns.status == 200
    assert dns.body["spec"]["clusterIP"] == "10.43.0.10"
    ports = {(p["name"], p["port"], p["protocol"]) for p in dns.body["spec"]["ports"]}
    assert ports == {("dns", 53, "UDP"), ("dns-tcp", 53, "TCP"), ("metrics", 9153, "TCP")}
    assert dns.body["metadata"]["labels"]["k8s-app"] == "kube-dns"


async def test_node_ports_are_allocated_in_range_and_checked(api: Api) -> None:
    first = await api.post(SVC, node_port_service("a"))
    assert first.status == 201
    allocated = first.body["spec"]["ports"][0]["nodePort"]
    assert 30000 <= allocated <= 32767
    taken = await api.post(SVC, node_port_service("b", allocated))
    assert taken.status == 422
    assert "already allocated" in taken.body["message"]
    outside = await api.post(SVC, node_port_service("c", 8080))
    assert outside.status == 422
    assert "30000-32767" in outside.body["message"]
    chosen = await api.post(SVC, node_port_service("d", 31000))
    assert chosen.status == 201
    assert chosen.body["spec"]["ports"][0]["nodePort"] == 31000
