"""The service proxy's nftables rules in real namespaces, without Docker.

Host 1 is the node: the proxier runs in this process and programs host 1's nftables through
``ip netns exec``. Endpoints are busybox httpd backends on host 2 (three addresses), on the
outside namespace and on host 1 itself; clients are host 1 (the node's own traffic, the seed's
``curl`` of a cluster IP) and the outside namespace (a machine on the LAN reaching NodePorts and
load-balancer addresses). Host 1 routes everything outside its LAN through the outside
namespace, as a node has a default route. Each test programs the services it needs and the
table is compared with what it was before, so nothing stale is left.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from k3py.cluster.agent.proxy.nft import NftCommand
from k3py.cluster.agent.proxy.proxier import Proxier
from k3py.cluster.agent.proxy.rules import ProxyConfig
from k3py.cluster.agent.proxy.source import ServiceCache
from tests.netns.services import fetch, start_backend
from tests.netns.topology import Topology, assert_host_namespace_clean, netns_tier

pytestmark = [*netns_tier(), pytest.mark.timeout(240)]

Object = dict[str, Any]
NODE = "n1"
CLUSTER_IP = "10.43.0.20"
BACKENDS = {"b1": "192.0.2.21", "b2": "192.0.2.22", "b3": "192.0.2.23"}


@pytest.fixture(scope="module")
def topology(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Topology]:
    root = tmp_path_factory.mktemp("svc")
    topo = Topology(hosts=2, prefix="k3pysvc")
    try:
        topo.create()
        h1, h2 = topo.hosts
        h1.run("ip", "route", "add", "default", "via", topo.outside.address)
        for name, address in BACKENDS.items():
            h2.run("ip", "addr", "add", f"{address}/24", "dev", "eth0")
            start_backend(h2, address, 8080, name, root)
        start_backend(h1, h1.address, 8080, "local", root)
        start_backend(topo.outside, topo.outside.address, 8080, "outside", root)
        yield topo
    finally:
        topo.destroy()
        assert_host_namespace_clean()


def service(name: str, *, kind: str = "ClusterIP", ip: str = CLUSTER_IP, **spec: Any) -> Object:
    port: Object = {"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}
    if kind != "ClusterIP":
        port["nodePort"] = 30080
    return {
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"type": kind, "clusterIP": ip, "ports": [port], **spec},
    }


def endpoints(name: str, addresses: list[tuple[str, str]]) -> Object:
    subsets = []
    if addresses:
        subsets.append(
            {
                "addresses": [{"ip": ip, "nodeName": node} for ip, node in addresses],
                "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            }
        )
    return {"metadata": {"name": name, "namespace": "default"}, "subsets": subsets}


REMOTE = [(ip, "n2") for ip in BACKENDS.values()]


class Node:
    """The proxier of host 1 over a cache the test fills."""

    def __init__(self, topology: Topology) -> None:
        self.topology = topology
        self.host = topology.hosts[0]
        self.cache = ServiceCache()
        self.nft = NftCommand(self.host.netns)
        self.proxier = Proxier(self.cache, self.nft, ProxyConfig(node_name=NODE))

    def put(self, *objects: Object) -> None:
        for obj in objects:
            if "subsets" in obj:
                self.cache.set_endpoints(obj)
            else:
                self.cache.set_service(obj)

    def drop(self, *keys: str) -> None:
        for key in keys:
            self.cache.delete_service(key)
            self.cache.delete_endpoints(key)

    def table(self) -> str:
        return self.host.run("nft", "list", "table", "inet", "k3py", check=False).stdout

    async def applied(self, change: Callable[[], None]) -> float:
        """Make a change to the cache; seconds until its rules are in the kernel."""
        generation = self.proxier.generation
        started = time.monotonic()
        change()
        async with asyncio.timeout(10):
            await self.proxier.wait_applied(generation)
        return time.monotonic() - started


@pytest.fixture
async def node(topology: Topology) -> AsyncIterator[Node]:
    made = Node(topology)
    before = made.table()
    task = asyncio.create_task(made.proxier.run())
    async with asyncio.timeout(10):
        await made.proxier.synced.wait()
    try:
        yield made
    finally:
        for key in list(made.cache.services):
            made.cache.delete_service(key)
        for key in list(made.cache.endpoints):
            made.cache.delete_endpoints(key)
        await asyncio.sleep(0.5)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await made.proxier.remove()
        assert made.table() == before


def bodies(answers: list[str]) -> Counter[str]:
    return Counter(answers)


async def test_cluster_ip_from_the_node_spreads_over_ready_endpoints(node: Node) -> None:
    await node.applied(lambda: node.cache.set_service(service("web")))
    refused = await asyncio.to_thread(fetch, node.host, f"http://{CLUSTER_IP}/", 1, 5)
    assert refused[0].startswith("error:")
    assert "refused" in refused[0].lower()  # rejected at once, not a timeout

    await node.applied(lambda: node.cache.set_endpoints(endpoints("web", REMOTE)))
    seen = bodies(await asyncio.to_thread(fetch, node.host, f"http://{CLUSTER_IP}/", 30))
    assert set(seen) == {"b1", "b2", "b3"}, seen

    # An endpoint that leaves the Endpoints (deleted or unready) leaves rotation at once.
    took = await node.applied(lambda: node.cache.set_endpoints(endpoints("web", REMOTE[:2])))
    assert took < 1.0
    seen = bodies(await asyncio.to_thread(fetch, node.host, f"http://{CLUSTER_IP}/", 20))
    assert set(seen) == {"b1", "b2"}, seen


async def test_client_ip_affinity_keeps_one_backend(node: Node) -> None:
    await node.applied(
        lambda: node.put(
            service("sticky", sessionAffinity="ClientIP"),
            endpoints("sticky", REMOTE),
        )
    )
    seen = bodies(await asyncio.to_thread(fetch, node.host, f"http://{CLUSTER_IP}/", 15))
    assert len(seen) == 1, seen


async def test_node_port_and_load_balancer_from_the_lan(node: Node, topology: Topology) -> None:
    h1, out = topology.hosts[0], topology.outside
    lb = service("lb", kind="LoadBalancer")
    lb["status"] = {"loadBalancer": {"ingress": [{"ip": h1.address}]}}
    await node.applied(lambda: node.put(lb, endpoints("lb", REMOTE)))
    seen = bodies(await asyncio.to_thread(fetch, out, f"http://{h1.address}:30080/", 20))
    assert set(seen) == {"b1", "b2", "b3"}, seen
    assert set(await asyncio.to_thread(fetch, out, f"http://{h1.address}:80/", 3)) <= {
        "b1",
        "b2",
        "b3",
    }
    # Cluster policy: the backend sees the node's address (masqueraded), as with kube-proxy.
    (source,) = await asyncio.to_thread(fetch, out, f"http://{h1.address}:30080/cgi-bin/ip")
    assert source in (h1.address, "192.0.2.21", "192.0.2.22", "192.0.2.23"), source
    assert source != out.address


async def test_external_traffic_policy_local_keeps_the_client_address(
    node: Node, topology: Topology
) -> None:
    h1, out = topology.hosts[0], topology.outside
    local = service("local", kind="NodePort", externalTrafficPolicy="Local")
    addresses = [*REMOTE, (h1.address, NODE)]
    await node.applied(
        lambda: node.put(
            local,
            endpoints("local", addresses),
        )
    )
    seen = bodies(await asyncio.to_thread(fetch, out, f"http://{h1.address}:30080/", 10))
    assert set(seen) == {"local"}, seen  # only this node's endpoint
    (source,) = await asyncio.to_thread(fetch, out, f"http://{h1.address}:30080/cgi-bin/ip")
    assert source == out.address


async def test_restart_resync_and_deleted_services_leave_no_stale_rule(
    node: Node, topology: Topology
) -> None:
    await node.applied(
        lambda: node.put(
            service("web"),
            endpoints("web", REMOTE),
        )
    )
    installed = node.table()
    # A restarted agent replaces the table in one transaction and ends where it was.
    again = Proxier(node.cache, node.nft, ProxyConfig(node_name=NODE))
    await again.full_sync()
    assert node.table() == installed
    assert bodies(await asyncio.to_thread(fetch, node.host, f"http://{CLUSTER_IP}/", 3))
    # A Service deleted while the agent was away is gone after its resync.
    node.cache.services.pop("default/web")
    await again.full_sync()
    assert "default/web" not in node.table()
    assert f"{CLUSTER_IP} . " not in node.table()


async def test_a_thousand_services_leave_the_table_as_it_began(node: Node) -> None:
    empty = node.table()

    def create() -> None:
        for i in range(1000):
            name = f"s{i}"
            node.cache.set_service(service(name, ip=f"10.43.{4 + i // 250}.{i % 250 + 1}"))
            node.cache.set_endpoints(endpoints(name, REMOTE[: 1 + i % 3]))

    await node.applied(create)
    # Plain services own no chain: each is an element leading to a shared pick chain.
    assert node.table().count(": goto svc-pick-") >= 1000
    await node.applied(lambda: node.drop(*(f"default/s{i}" for i in range(1000))))
    assert node.table() == empty
