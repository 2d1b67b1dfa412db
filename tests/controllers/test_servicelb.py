"""ServiceLB: LoadBalancer Services get the nodes' addresses as their ingress."""

from __future__ import annotations

from typing import Any

from k3py.cluster.server.controllers.base import SERVICES
from k3py.cluster.server.controllers.servicelb import ENABLE_LABEL, ServiceLBController
from tests.controllers.harness import Cluster, node

Object = dict[str, Any]


def addressed(name: str, ip: str, **kwargs: Any) -> Object:
    made = node(name, **kwargs)
    made["status"]["addresses"] = [{"type": "InternalIP", "address": ip}]
    return made


def service(name: str, kind: str = "LoadBalancer") -> Object:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"type": kind, "ports": [{"port": 80, "nodePort": 30080}]},
    }


def ingress(cluster: Cluster, name: str) -> list[str]:
    (svc,) = [s for s in cluster.api.objects(SERVICES) if s["metadata"]["name"] == name]
    entries = ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
    return [entry["ip"] for entry in entries]


async def test_ready_nodes_addresses_become_the_ingress(cluster: Cluster) -> None:
    cluster.add(ServiceLBController)
    await cluster.create(addressed("n1", "192.0.2.11"))
    await cluster.create(addressed("n2", "192.0.2.12"))
    await cluster.create(addressed("n3", "192.0.2.13", ready="False"))
    await cluster.create(service("web"))
    await cluster.create(service("plain", "ClusterIP"))
    await cluster.start()
    await cluster.settle()
    assert ingress(cluster, "web") == ["192.0.2.11", "192.0.2.12"]
    assert ingress(cluster, "plain") == []
    assert cluster.events("UpdatedLoadBalancer")


async def test_enablelb_labels_choose_the_nodes(cluster: Cluster) -> None:
    cluster.add(ServiceLBController)
    await cluster.create(addressed("n1", "192.0.2.11", labels={ENABLE_LABEL: "true"}))
    await cluster.create(addressed("n2", "192.0.2.12", labels={ENABLE_LABEL: "false"}))
    await cluster.create(addressed("n3", "192.0.2.13"))
    await cluster.create(service("web"))
    await cluster.start()
    await cluster.settle()
    assert ingress(cluster, "web") == ["192.0.2.11"]
