"""The Endpoints controller: each selecting Service's pod addresses and ports, kept current.

For a Service with a selector, the Endpoints object of the same name lists the IPs of the
matching pods that have one and are not being deleted: ready pods under ``addresses``, the
others under ``notReadyAddresses`` (all under ``addresses`` with
``publishNotReadyAddresses``). Ports come from the Service, with named ``targetPort``s resolved
against each pod's container ports; pods that resolve to the same ports share a subset.
Services without a selector are left to their owner; a deleted Service's Endpoints go too.
"""

from __future__ import annotations

import logging
from typing import Any

from k3py.cluster.api.selectors import LabelSelector
from k3py.cluster.api.status import ApiError
from k3py.cluster.client.events import micro_timestamp
from k3py.cluster.server.controllers import podutil
from k3py.cluster.server.controllers.base import (
    ENDPOINTS,
    PODS,
    SERVICES,
    ControllerContext,
    QueueController,
)

logger = logging.getLogger("k3py.controllers.endpoints")

Object = dict[str, Any]
# Marks Endpoints this controller wrote (kube-controller-manager's own marker).
TRIGGER_TIME = "endpoints.kubernetes.io/last-change-trigger-time"


def _target_port(service_port: Object, pod: Object) -> int | None:
    target = service_port.get("targetPort", service_port.get("port"))
    if isinstance(target, int):
        return target
    if isinstance(target, str) and target.isdigit():
        return int(target)
    protocol = service_port.get("protocol") or "TCP"
    for container in (pod.get("spec") or {}).get("containers") or []:
        for port in container.get("ports") or []:
            if port.get("name") == target and (port.get("protocol") or "TCP") == protocol:
                return int(port["containerPort"])
    return None


def endpoint_subsets(service: Object, pods: list[Object]) -> list[Object]:
    """The ``subsets`` the Service's Endpoints should hold for these candidate pods."""
    spec = service.get("spec") or {}
    publish_all = bool(spec.get("publishNotReadyAddresses"))
    groups: dict[tuple[tuple[str, int, str], ...], dict[str, list[Object]]] = {}
    for pod in pods:
        ip = (pod.get("status") or {}).get("podIP")
        if not ip or podutil.is_terminating(pod) or podutil.phase(pod) in ("Succeeded", "Failed"):
            continue
        ports: list[tuple[str, int, str]] = []
        for sp in spec.get("ports") or []:
            number = _target_port(sp, pod)
            if number is not None:
                ports.append((str(sp.get("name") or ""), number, str(sp.get("protocol") or "TCP")))
        address: Object = {
            "ip": ip,
            "targetRef": {
                "kind": "Pod",
                "namespace": podutil.namespace_of(pod),
                "name": podutil.name_of(pod),
                "uid": podutil.uid_of(pod),
            },
        }
        node = (pod.get("spec") or {}).get("nodeName")
        if node:
            address["nodeName"] = node
        group = groups.setdefault(tuple(sorted(ports)), {"ready": [], "not_ready": []})
        group["ready" if publish_all or podutil.is_ready(pod) else "not_ready"].append(address)
    subsets = []
    for port_set, group in sorted(groups.items()):
        subset: Object = {}
        if group["ready"]:
            subset["addresses"] = sorted(group["ready"], key=lambda a: a["ip"])
        if group["not_ready"]:
            subset["notReadyAddresses"] = sorted(group["not_ready"], key=lambda a: a["ip"])
        if port_set:
            subset["ports"] = [
                {"name": name, "port": number, "protocol": protocol}
                if name
                else {"port": number, "protocol": protocol}
                for name, number, protocol in port_set
            ]
        subsets.append(subset)
    return subsets


class EndpointsController(QueueController):
    name = "endpoints"
    component = "endpoint-controller"

    def __init__(self, ctx: ControllerContext) -> None:
        super().__init__(ctx)
        self.services = ctx.informers.get(SERVICES)
        self.endpoints = ctx.informers.get(ENDPOINTS)
        self.pods = ctx.informers.get(PODS)
        self.services.add_handler(self.enqueue, lambda _o, n: self.enqueue(n), self.enqueue)
        self.endpoints.add_handler(self.enqueue, lambda _o, n: self.enqueue(n), self.enqueue)
        self.pods.add_handler(self._pod_event, self._pod_changed, self._pod_event)

    def _pod_event(self, pod: Object) -> None:
        labels = podutil.meta(pod).get("labels") or {}
        for service in self.services.list(podutil.namespace_of(pod)):
            selector = (service.get("spec") or {}).get("selector")
            if selector and all(labels.get(k) == v for k, v in selector.items()):
                self.enqueue(service)

    def _pod_changed(self, old: Object, new: Object) -> None:
        self._pod_event(new)
        if podutil.meta(old).get("labels") != podutil.meta(new).get("labels"):
            self._pod_event(old)

    async def reconcile(self, key: str) -> float | None:
        service = self.services.get_by_key(key)
        current = self.endpoints.get_by_key(key)
        if service is None:
            if current is not None and self._managed(current):
                try:
                    await self.api.delete(
                        ENDPOINTS, podutil.name_of(current), podutil.namespace_of(current)
                    )
                except ApiError as err:
                    if err.code != 404:
                        raise
                self.endpoints.assume_deleted(current)
            return None
        selector = (service.get("spec") or {}).get("selector")
        if not selector:
            return None
        match = LabelSelector.from_object({"matchLabels": selector})
        pods = [
            p
            for p in self.pods.list(podutil.namespace_of(service))
            if match.matches(podutil.meta(p).get("labels") or {})
        ]
        subsets = endpoint_subsets(service, pods)
        labels = dict(podutil.meta(service).get("labels") or {})
        if current is None:
            body = {
                "apiVersion": "v1",
                "kind": "Endpoints",
                "metadata": {
                    "name": podutil.name_of(service),
                    "namespace": podutil.namespace_of(service),
                    "labels": labels,
                    "annotations": {TRIGGER_TIME: micro_timestamp(self.clock)},
                },
                "subsets": subsets,
            }
            try:
                created = await self.api.create(ENDPOINTS, body, podutil.namespace_of(service))
            except ApiError as err:
                if err.code == 409:
                    raise ApiError(409, "Conflict", "Endpoints appeared meanwhile") from err
                raise
            self.endpoints.assume(created)
            return None
        if (current.get("subsets") or []) == subsets and (
            podutil.meta(current).get("labels") or {}
        ) == labels:
            return None
        replacement = {**current, "subsets": subsets}
        annotations = dict(podutil.meta(current).get("annotations") or {})
        annotations[TRIGGER_TIME] = micro_timestamp(self.clock)
        replacement["metadata"] = {
            **podutil.meta(current),
            "labels": labels,
            "annotations": annotations,
        }
        if not subsets:
            replacement.pop("subsets")
        updated = await self.api.update(ENDPOINTS, replacement)
        self.endpoints.assume(updated)
        return None

    def _managed(self, endpoints: Object) -> bool:
        return TRIGGER_TIME in (podutil.meta(endpoints).get("annotations") or {})
