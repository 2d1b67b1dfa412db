"""What an agent runs once its Node is registered: the pod sync and where its pods come from,
the pod network, the node's services (proxy, node-local DNS) and the tunnel to the servers.

:mod:`k3py.cluster.agent.agent` imports this module only after the node's first registration
attempt: the Node is Ready as soon as the runtime answers, and these parts' imports were a
third of the agent's start on an emulated board (about a second of its one core, spent while
dockerd was still starting).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from k3py.cluster.agent.autonomy.store import LocalStore
from k3py.cluster.agent.loadbalancer import ServerLoadBalancer
from k3py.cluster.agent.metrics.bundle import AgentObservability
from k3py.cluster.agent.network.podnet import FlannelNetwork, NetworkConfig
from k3py.cluster.agent.node.identity import NodeIdentity
from k3py.cluster.agent.podsource import ClusterPods
from k3py.cluster.agent.podsync.backoff import Backoff
from k3py.cluster.agent.podsync.dnsconfig import CachedServices, DnsSettings
from k3py.cluster.agent.podsync.loop import PodSync
from k3py.cluster.agent.podsync.network import PodNetwork, RuntimeBridge
from k3py.cluster.agent.podsync.probes import Prober
from k3py.cluster.agent.podsync.volumes import PodVolumes
from k3py.cluster.agent.podsync.worker import NodeConfig, WorkerDeps
from k3py.cluster.agent.proxy.node import NodeServices, ServicesConfig
from k3py.cluster.agent.runtime import ContainerRuntime
from k3py.cluster.agent.settings import AgentSettings, flannel_enabled
from k3py.cluster.agent.tunnel.pool import TunnelPool
from k3py.cluster.agent.tunnel.streams import NodeStreams
from k3py.cluster.client import Clock, EventRecorder, KubeClient

logger = logging.getLogger("k3py.agent")

Background = Callable[[str, Callable[[], Awaitable[None]]], None]


def make_flannel(
    settings: AgentSettings,
    node_name: str,
    client: KubeClient,
    runtime: ContainerRuntime,
    clock: Clock,
    host_ip: str,
) -> FlannelNetwork | None:
    """The pod network for ``--flannel-backend`` (None for none: the runtime's bridge)."""
    if not flannel_enabled(settings):
        return None
    config = NetworkConfig(
        backend=settings.flannel_backend,
        node_name=node_name,
        node_ip=host_ip,
        iface=settings.flannel_iface,
        cluster_cidr=settings.cluster_cidr,
        state_dir=settings.agent_dir / "network",
    )
    return FlannelNetwork(config, client, runtime, clock, host_ip)


async def leave_host_network_alone(settings: AgentSettings) -> None:
    """``--flannel-backend none``: remove what an earlier run's pod network made, if any."""
    from k3py.cluster.agent.network import nft
    from k3py.cluster.agent.network.podnet import remove_pod_network

    try:
        if await nft.remove_chains():
            logger.info("removed the pod network's nftables rules (--flannel-backend none)")
        if await asyncio.to_thread(remove_pod_network, settings.agent_dir / "network"):
            logger.info("removed the pod network's devices and routes (--flannel-backend none)")
    except (nft.NftError, OSError) as err:
        logger.warning("cannot remove the old pod network", extra={"fields": {"error": str(err)}})


class NodeWorkers:
    """The registered node's parts, built from the agent's settings, identity and clients."""

    def __init__(
        self,
        settings: AgentSettings,
        identity: NodeIdentity,
        clock: Clock,
        *,
        client: KubeClient,
        balancer: ServerLoadBalancer,
        recorder: EventRecorder,
        observability: AgentObservability,
        host_ip: str,
    ) -> None:
        self.settings = settings
        self.balancer = balancer
        self.client = client
        self.observability = observability
        self.runtime: ContainerRuntime = observability.runtime
        self.node = NodeConfig(
            node_name=identity.node_name,
            host_ip=host_ip,
            sandbox_image=settings.pause_image,
            runtime_scheme=settings.runtime,
        )
        self.store = LocalStore(settings.agent_dir / "cache")
        self.pods = ClusterPods(client, self.store, clock, identity.node_name, recorder)
        self.flannel = make_flannel(
            settings, identity.node_name, client, self.runtime, clock, self.node.host_ip
        )
        self.network: PodNetwork = self.flannel or RuntimeBridge(self.node.host_ip)
        # Services (cache, proxy, node-local DNS); hollow nodes run no pods to serve.
        self.services = (
            None
            if settings.runtime == "fake"
            else NodeServices(
                client,
                clock,
                ServicesConfig(
                    node_name=identity.node_name,
                    node_ip=self.node.host_ip,
                    cache_path=settings.agent_dir / "cache" / "services.json",
                    cluster_cidr=settings.cluster_cidr,
                    service_cidr=settings.service_cidr,
                    cluster_dns=settings.cluster_dns,
                    cluster_domain=settings.cluster_domain,
                    resolv_conf=settings.resolv_conf,
                    enabled=flannel_enabled(settings),
                ),
            )
        )
        self.sync = PodSync(
            WorkerDeps(
                runtime=self.runtime,
                host=observability.pod_host(self.pods),
                volumes=PodVolumes(settings.agent_dir),
                clock=clock,
                node=self.node,
                backoff=Backoff(),
                prober=Prober(self.runtime),
                network=self.network,
                services=CachedServices(self.services.cache.services) if self.services else None,
                dns=DnsSettings(settings.cluster_dns, settings.cluster_domain, settings.resolv_conf)
                if self.services is not None and self.flannel is not None
                else None,
            )
        )
        # One tunnel to each known server: logs and exec work through whichever server a
        # request reaches.
        self.tunnel = TunnelPool(
            balancer,
            identity.ssl_context(),
            NodeStreams(self.runtime, identity.node_name, clock, extra=observability.streams()),
            clock,
        )

    async def start(self, background: Background, syncloop: Callable[[], str | None]) -> None:
        if self.flannel is not None:
            await self.flannel.start()
        elif self.settings.runtime != "fake":
            await leave_host_network_alone(self.settings)
        if self.services is not None:
            self.services.start()
        self.sync.start()
        self.pods.start(self.sync)
        if self.services is not None:
            self.services.watch_pods(self.pods.pods, self.store.pods())
        for name, work in (
            ("tunnel", self.tunnel.run),
            ("servers", lambda: self.balancer.refresh(self.client, asyncio.Event())),
            ("usage", self.observability.sampler.run),
        ):
            background(name, work)
        self.observability.watch(
            lambda: self.sync.pods,
            lambda: (self.tunnel.connected.is_set(), self.tunnel.connections),
            {"syncloop": syncloop},
        )

    async def stop(self) -> None:
        await self.pods.stop()
        await self.sync.stop()
        if self.services is not None:
            await self.services.stop()
        if self.flannel is not None:
            await self.flannel.stop()
