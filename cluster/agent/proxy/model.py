"""What the proxy needs to know of a Service and its Endpoints, read once from the API objects.

A :class:`ServicePort` is one port of one Service with everything its rules depend on: the
addresses it answers on (cluster IP, nodePort, load-balancer ingress and external IPs), its
policies, and its ready endpoints (the Endpoints controller leaves out pods that are not ready
or are being deleted, so "listed under ``addresses``" is "in rotation"). Two equal
:class:`ServicePort` values produce the same rules, which is how the proxier knows a change
needs no transaction.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

Object = dict[str, Any]
PROTOCOLS = ("TCP", "UDP")
DEFAULT_AFFINITY_SECONDS = 10800  # Kubernetes' default sessionAffinityConfig.clientIP timeout


@dataclass(frozen=True, order=True)
class Endpoint:
    ip: str
    port: int
    node_name: str = ""


@dataclass(frozen=True)
class ServicePort:
    namespace: str
    name: str
    port_name: str
    protocol: str  # "tcp" or "udp", as nftables spells it
    cluster_ip: str
    port: int
    node_port: int = 0
    external_ips: tuple[str, ...] = ()  # load-balancer ingress and spec.externalIPs
    affinity_seconds: int = 0  # 0: no ClientIP affinity
    local_only: bool = False  # externalTrafficPolicy: Local
    endpoints: tuple[Endpoint, ...] = ()

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}/{self.protocol}/{self.port_name or self.port}"


def _ipv4(value: Any) -> str | None:
    try:
        address = ipaddress.ip_address(str(value))
    except ValueError:
        return None
    return str(address) if address.version == 4 else None


def _endpoints_for(endpoints: Object | None, port_name: str, protocol: str) -> tuple[Endpoint, ...]:
    found: set[Endpoint] = set()
    for subset in (endpoints or {}).get("subsets") or []:
        ports = [
            p
            for p in subset.get("ports") or []
            if str(p.get("name") or "") == port_name and str(p.get("protocol") or "TCP") == protocol
        ]
        for port in ports:
            for address in subset.get("addresses") or []:
                ip = _ipv4(address.get("ip"))
                if ip is not None and isinstance(port.get("port"), int):
                    found.add(Endpoint(ip, int(port["port"]), str(address.get("nodeName") or "")))
    return tuple(sorted(found))


def service_ports(service: Object, endpoints: Object | None) -> list[ServicePort]:
    """The proxied ports of one Service (none for headless, ExternalName or IPv6 services)."""
    meta = service.get("metadata") or {}
    spec = service.get("spec") or {}
    kind = spec.get("type") or "ClusterIP"
    cluster_ip = _ipv4(spec.get("clusterIP"))
    if kind == "ExternalName" or cluster_ip is None:
        return []
    ingress = [
        ip
        for entry in ((service.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
        if (ip := _ipv4(entry.get("ip"))) is not None
    ]
    external = tuple(
        sorted({*ingress, *(ip for e in spec.get("externalIPs") or [] if (ip := _ipv4(e)))})
    )
    affinity = 0
    if spec.get("sessionAffinity") == "ClientIP":
        config = (spec.get("sessionAffinityConfig") or {}).get("clientIP") or {}
        affinity = int(config.get("timeoutSeconds") or DEFAULT_AFFINITY_SECONDS)
    local_only = spec.get("externalTrafficPolicy") == "Local" and kind in (
        "NodePort",
        "LoadBalancer",
    )
    result = []
    for port in spec.get("ports") or []:
        protocol = str(port.get("protocol") or "TCP")
        if protocol not in PROTOCOLS or not isinstance(port.get("port"), int):
            continue
        name = str(port.get("name") or "")
        node_port = port.get("nodePort") if kind in ("NodePort", "LoadBalancer") else 0
        result.append(
            ServicePort(
                namespace=str(meta.get("namespace") or "default"),
                name=str(meta.get("name") or ""),
                port_name=name,
                protocol=protocol.lower(),
                cluster_ip=cluster_ip,
                port=int(port["port"]),
                node_port=int(node_port) if isinstance(node_port, int) else 0,
                external_ips=external,
                affinity_seconds=affinity,
                local_only=local_only,
                endpoints=_endpoints_for(endpoints, name, protocol),
            )
        )
    return result


@dataclass(frozen=True, order=True)
class HostPort:
    """A pod's ``hostPort``: traffic to the node at ``host_port`` goes to the pod."""

    protocol: str  # "tcp" or "udp"
    host_port: int
    pod_ip: str
    container_port: int
    host_ip: str = ""


def host_ports(pod: Object) -> list[HostPort]:
    spec = pod.get("spec") or {}
    pod_ip = _ipv4((pod.get("status") or {}).get("podIP"))
    if spec.get("hostNetwork") or pod_ip is None:
        return []
    found = []
    for container in spec.get("containers") or []:
        for port in container.get("ports") or []:
            protocol = str(port.get("protocol") or "TCP")
            if not port.get("hostPort") or protocol not in PROTOCOLS:
                continue
            found.append(
                HostPort(
                    protocol.lower(),
                    int(port["hostPort"]),
                    pod_ip,
                    int(port["containerPort"]),
                    _ipv4(port.get("hostIP")) or "",
                )
            )
    return found
