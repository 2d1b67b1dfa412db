"""ServiceLB: K3s's load balancer for ``type: LoadBalancer`` Services, without extra pods.

K3s's ServiceLB (klipper-lb) runs a DaemonSet that forwards each LoadBalancer port on every node
and writes the nodes' addresses into ``status.loadBalancer.ingress``. In k3py the agents' service
proxy already answers a Service's load-balancer addresses on every node, so only the status
remains: this controller lists the addresses of the Ready nodes (or, when any node carries the
``svccontroller.k3s.cattle.io/enablelb`` label, of those labelled ``true``, as K3s), preferring
a node's ExternalIP over its InternalIP. ``kubectl get svc`` then shows them as EXTERNAL-IP.
Services with a ``loadBalancerClass`` belong to another controller and are left alone.
``--disable servicelb`` turns the controller off.
"""

from __future__ import annotations

import logging
from typing import Any

from k3py.cluster.server.controllers import podutil
from k3py.cluster.server.controllers.base import (
    NODES,
    SERVICES,
    ControllerContext,
    QueueController,
)

logger = logging.getLogger("k3py.controllers.servicelb")

Object = dict[str, Any]
ENABLE_LABEL = "svccontroller.k3s.cattle.io/enablelb"


def _ready(node: Object) -> bool:
    for condition in (node.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Ready":
            return bool(condition.get("status") == "True")
    return False


def _address(node: Object) -> str:
    by_type = {
        a.get("type"): a.get("address") for a in (node.get("status") or {}).get("addresses") or []
    }
    return str(by_type.get("ExternalIP") or by_type.get("InternalIP") or "")


def ingress_for(nodes: list[Object]) -> list[Object]:
    """``status.loadBalancer.ingress`` for these nodes, sorted by address."""
    live = [n for n in nodes if not podutil.meta(n).get("deletionTimestamp")]
    if any(ENABLE_LABEL in (podutil.meta(n).get("labels") or {}) for n in live):
        live = [
            n for n in live if (podutil.meta(n).get("labels") or {}).get(ENABLE_LABEL) == "true"
        ]
    addresses = sorted({a for n in live if _ready(n) and (a := _address(n))})
    return [{"ip": ip, "ipMode": "VIP"} for ip in addresses]


class ServiceLBController(QueueController):
    name = "servicelb"
    component = "service-lb-controller"

    def __init__(self, ctx: ControllerContext) -> None:
        super().__init__(ctx)
        self.services = ctx.informers.get(SERVICES)
        self.nodes = ctx.informers.get(NODES)
        self.services.add_handler(self.enqueue, lambda _o, n: self.enqueue(n), None)
        self.nodes.add_handler(
            lambda _n: self._all(), lambda o, n: self._node_changed(o, n), lambda _n: self._all()
        )

    def _node_changed(self, old: Object, new: Object) -> None:
        if (_ready(old), _address(old), podutil.meta(old).get("labels")) != (
            _ready(new),
            _address(new),
            podutil.meta(new).get("labels"),
        ):
            self._all()

    def _all(self) -> None:
        for service in self.services.list():
            if (service.get("spec") or {}).get("type") == "LoadBalancer":
                self.enqueue(service)

    async def reconcile(self, key: str) -> float | None:
        service = self.services.get_by_key(key)
        if service is None or podutil.meta(service).get("deletionTimestamp"):
            return None
        spec = service.get("spec") or {}
        status = service.get("status") or {}
        current = (status.get("loadBalancer") or {}).get("ingress") or []
        if spec.get("type") != "LoadBalancer":
            if not current:
                return None
            wanted: list[Object] = []  # no longer a LoadBalancer: drop the addresses
        elif spec.get("loadBalancerClass"):
            return None
        else:
            wanted = ingress_for(self.nodes.list())
        if current == wanted:
            return None
        updated = await self.api.update(
            SERVICES,
            {
                **service,
                "status": {**status, "loadBalancer": {"ingress": wanted} if wanted else {}},
            },
            subresource="status",
        )
        self.services.assume(updated)
        if wanted:
            addresses = ", ".join(entry["ip"] for entry in wanted)
            self.event(
                service,
                "Normal",
                "UpdatedLoadBalancer",
                f"Updated LoadBalancer with new IPs: [{addresses}]",
            )
        return None
