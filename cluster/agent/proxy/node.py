"""The node's service plumbing, assembled: the Service/Endpoints cache, the proxy and the DNS.

:class:`NodeServices` is what the agent starts. The cache (and its informers) always runs: the
pods' service environment variables come from it. With a pod network, the proxier programs the
node's nftables and the node-local DNS listens on the node's address; the proxy delivers the
cluster DNS address (``10.43.0.10:53``, TCP and UDP) to that listener, and a guard drops
queries that reach the listener directly, so the node is no open resolver for its LAN. With
``--flannel-backend none`` neither runs, and rules a previous run left are removed. Pods'
``hostPort``s are forwarded by the proxy too (the pod network's sandboxes have no runtime port
publishing): :meth:`NodeServices.watch_pods` follows the node's pods for them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from k3py.cluster.agent.dns.forward import Forwarder, nameservers
from k3py.cluster.agent.dns.server import DnsServer
from k3py.cluster.agent.dns.zone import ClusterZone, ZoneConfig
from k3py.cluster.agent.proxy.model import host_ports
from k3py.cluster.agent.proxy.nft import Nftables, NftCommand, NftError
from k3py.cluster.agent.proxy.proxier import Proxier
from k3py.cluster.agent.proxy.rules import ProxyConfig, Redirect
from k3py.cluster.agent.proxy.source import ServiceCache, ServiceSource
from k3py.cluster.client import Clock, Informer, KubeApi, object_key
from k3py.shutdown import cancel_and_wait

logger = logging.getLogger("k3py.agent.services")

RESTART_SECONDS = 5.0


@dataclass(frozen=True)
class ServicesConfig:
    node_name: str
    node_ip: str
    cache_path: Path
    cluster_cidr: str = "10.42.0.0/16"
    service_cidr: str = "10.43.0.0/16"
    cluster_dns: str = "10.43.0.10"
    cluster_domain: str = "cluster.local"
    resolv_conf: Path = Path("/etc/resolv.conf")
    dns_port: int = 53
    enabled: bool = True  # False with --flannel-backend none


class NodeServices:
    def __init__(
        self,
        api: KubeApi,
        clock: Clock,
        config: ServicesConfig,
        nft: Nftables | None = None,
    ) -> None:
        self.config = config
        self.clock = clock
        self.cache = ServiceCache(config.cache_path, clock)
        self.source = ServiceSource(api, self.cache, clock)
        redirect = Redirect(config.cluster_dns, 53, config.node_ip, config.dns_port)
        self.proxier = Proxier(
            self.cache,
            nft or NftCommand(),
            ProxyConfig(node_name=config.node_name, cluster_cidr=config.cluster_cidr),
            redirect=redirect,
        )
        self.zone = ClusterZone(
            self.cache,
            ZoneConfig(config.cluster_domain, config.service_cidr, config.cluster_cidr),
        )
        upstreams = nameservers(config.resolv_conf, exclude=(config.node_ip, config.cluster_dns))
        self.dns = DnsServer(self.zone, Forwarder(upstreams), config.node_ip, config.dns_port)
        self._tasks: list[asyncio.Task[Any]] = []
        self._host_port_pods: dict[str, dict[str, Any]] = {}

    def watch_pods(self, informer: Informer | None, stored: list[dict[str, Any]]) -> None:
        """Follow this node's pods for their hostPorts (the stored ones until the server's
        list arrives)."""
        for pod in stored:
            self._pod_changed(pod)
        if informer is not None:
            informer.add_handler(
                on_add=self._pod_changed,
                on_update=lambda _o, n: self._pod_changed(n),
                on_delete=self._pod_deleted,
            )

    def _pod_changed(self, pod: dict[str, Any]) -> None:
        key = object_key(pod)
        if host_ports(pod) and not (pod.get("metadata") or {}).get("deletionTimestamp"):
            self._host_port_pods[key] = pod
        elif self._host_port_pods.pop(key, None) is None:
            return
        self._host_ports_changed()

    def _pod_deleted(self, pod: dict[str, Any]) -> None:
        if self._host_port_pods.pop(object_key(pod), None) is not None:
            self._host_ports_changed()

    def _host_ports_changed(self) -> None:
        ports = [p for pod in self._host_port_pods.values() for p in host_ports(pod)]
        self.proxier.set_host_ports(ports)

    def start(self) -> None:
        self.source.start()
        if self.config.enabled:
            for name, work in (
                ("service-proxy", self.proxier.run),
                ("cluster-dns", self._serve_dns),
            ):
                self._tasks.append(asyncio.create_task(self._keep(name, work), name=name))
        else:
            self._tasks.append(asyncio.create_task(self._remove_rules(), name="service-cleanup"))

    async def _keep(self, name: str, work: Callable[[], Awaitable[None]]) -> None:
        """Run ``work`` until cancelled; a failure is logged with its traceback and retried."""
        while True:
            try:
                await work()
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception(
                    "service task failed; restarting it", extra={"fields": {"task": name}}
                )
                self.proxier.mark_all()
                await self.clock.sleep(RESTART_SECONDS)

    async def _serve_dns(self) -> None:
        while True:
            try:
                await self.dns.run()
            except OSError as err:
                logger.warning(
                    "cluster DNS cannot listen; retrying",
                    extra={"fields": {"address": self.config.node_ip, "error": str(err)}},
                )
                await self.clock.sleep(RESTART_SECONDS)

    async def _remove_rules(self) -> None:
        try:
            await self.proxier.remove()
        except (NftError, OSError) as err:
            logger.debug("no service rules removed", extra={"fields": {"error": str(err)}})

    async def stop(self) -> None:
        await cancel_and_wait(*self._tasks, log=logger)
        await self.source.stop()
