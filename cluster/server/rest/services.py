"""Service address allocation: clusterIPs from the service CIDR and nodePorts from their range.

kube-apiserver allocates these while it stores a Service; so does k3py, under one lock per
server so that two concurrent creates never receive the same address. The allocation scans the
stored Services (a small set on an edge cluster) instead of keeping a separate bitmap.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from k3py.cluster.api import status
from k3py.cluster.api.resources import by_kind
from k3py.cluster.server.rest.context import RestContext

Object = dict[str, Any]
SERVICES = by_kind("v1", "Service")
# kube-apiserver keeps the low part of the range for static addresses (DNS takes .10).
_DYNAMIC_FROM = 16
_NEEDS_NODE_PORTS = ("NodePort", "LoadBalancer")


def _invalid(svc: Object, field: str, message: str) -> status.ApiError:
    name = svc["metadata"].get("name", "")
    return status.invalid("", "Service", name, [status.Cause("FieldValueInvalid", message, field)])


async def allocate(ctx: RestContext, svc: Object, old: Object | None) -> None:
    """Give ``svc`` a clusterIP and nodePorts it needs but lacks; 422 if a request collides.

    The caller holds ``ctx.allocation_lock`` until the Service is stored.
    """
    assert SERVICES is not None
    spec = svc.setdefault("spec", {})
    kind = spec.get("type") or "ClusterIP"
    if kind == "ExternalName":
        return
    others = [
        s
        for s in await ctx.objects.list_all(SERVICES, None)
        if s["metadata"].get("uid") != svc["metadata"].get("uid")
    ]
    if old is None:
        _allocate_cluster_ip(ctx, svc, spec, others)
    if kind in _NEEDS_NODE_PORTS:
        _allocate_node_ports(ctx, svc, spec, others)


def _allocate_cluster_ip(ctx: RestContext, svc: Object, spec: Object, others: list[Object]) -> None:
    network = ipaddress.ip_network(ctx.settings.service_cidr, strict=False)
    wanted = spec.get("clusterIP") or (spec.get("clusterIPs") or [""])[0]
    if wanted == "None":
        spec["clusterIP"] = "None"
        spec["clusterIPs"] = ["None"]
        return
    used = {
        (s.get("spec") or {}).get("clusterIP")
        for s in others
        if (s.get("spec") or {}).get("clusterIP")
    }
    if wanted:
        try:
            address = ipaddress.ip_address(wanted)
        except ValueError:
            raise _invalid(
                svc, "spec.clusterIPs[0]", f'Invalid value: "{wanted}": must be a valid IP address'
            ) from None
        if address not in network:
            raise _invalid(
                svc,
                "spec.clusterIPs[0]",
                f'Invalid value: "{wanted}": failed to allocate IP {wanted}: the provided IP'
                f" ({wanted}) is not in the valid range. The range of valid IPs is {network}",
            )
        if wanted in used:
            raise _invalid(
                svc,
                "spec.clusterIPs[0]",
                f'Invalid value: "{wanted}": failed to allocate IP {wanted}: provided IP is'
                " already allocated",
            )
        chosen = wanted
    else:
        chosen = ""
        for offset in range(_DYNAMIC_FROM, min(network.num_addresses - 1, 1 << 16)):
            candidate = str(network.network_address + offset)
            if candidate not in used:
                chosen = candidate
                break
        if not chosen:
            raise _invalid(
                svc, "spec.clusterIPs", "failed to allocate a clusterIP: the range is full"
            )
    spec["clusterIP"] = chosen
    spec["clusterIPs"] = [chosen]
    family = "IPv6" if ipaddress.ip_address(chosen).version == 6 else "IPv4"
    spec.setdefault("ipFamilies", [family])
    spec.setdefault("ipFamilyPolicy", "SingleStack")


def _allocate_node_ports(ctx: RestContext, svc: Object, spec: Object, others: list[Object]) -> None:
    low, high = ctx.settings.service_node_port_range
    used = {
        port.get("nodePort")
        for s in others
        for port in (s.get("spec") or {}).get("ports") or []
        if port.get("nodePort")
    }
    next_free = low
    for index, port in enumerate(spec.get("ports") or []):
        wanted = port.get("nodePort")
        if wanted:
            if not isinstance(wanted, int) or not low <= wanted <= high:
                raise _invalid(
                    svc,
                    f"spec.ports[{index}].nodePort",
                    f"Invalid value: {wanted}: provided port is not in the valid range."
                    f" The range of valid ports is {low}-{high}",
                )
            if wanted in used:
                raise _invalid(
                    svc,
                    f"spec.ports[{index}].nodePort",
                    f"Invalid value: {wanted}: provided port is already allocated",
                )
            used.add(wanted)
            continue
        while next_free in used and next_free <= high:
            next_free += 1
        if next_free > high:
            raise _invalid(svc, f"spec.ports[{index}].nodePort", "no free nodePort is left")
        port["nodePort"] = next_free
        used.add(next_free)
