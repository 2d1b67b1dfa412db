"""The pod network across three hosts (network namespaces on one LAN bridge), per backend.

For ``vxlan`` and ``host-gw`` one topology and cluster serve the whole module (module-scoped
fixture): a pod on host 1 and one on host 3 talk TCP over the backend's device, two pods on
host 2 talk through ``cni0``, a pod reaches the outside namespace masqueraded to its node's
address, an agent restart changes no address and duplicates nothing, an agent restarted while
the server is down rewires from what it stored, K3s's quick start works across hosts, and a
deleted node leaves nothing behind on the others. The machine's own namespace never gets a
route into the cluster CIDR.
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.agent.cluster import docker, wait_until
from tests.agent.images import TEST_IMAGE, docker_tier
from tests.netns.cluster import NetnsCluster
from tests.netns.topology import Host, Topology, assert_host_namespace_clean, netns_tier

pytestmark = [*netns_tier(), *docker_tier(), pytest.mark.timeout(300)]

HTTPD = ["httpd", "-f", "-p", "80", "-h", "/www"]
SLEEP = ["sleep", "3600"]
PAGE = "hello from k3py"
ANNOTATION = "flannel.alpha.coreos.com/"


class Net:
    def __init__(self, topology: Topology, cluster: NetnsCluster) -> None:
        self.topology = topology
        self.cluster = cluster
        self.backend = cluster.backend
        self.ips: dict[str, str] = {}

    @property
    def device(self) -> str:
        return "flannel.1" if self.backend == "vxlan" else "eth0"

    def host(self, index: int) -> Host:
        return self.topology.hosts[index - 1]


@pytest.fixture(scope="module", params=["vxlan", "host-gw"])
def net(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Net]:
    backend = str(request.param)
    topology = Topology(3)
    cluster = NetnsCluster(topology, tmp_path_factory.mktemp(f"podnet-{backend}"), backend=backend)
    try:
        topology.create()
        cluster.start()
        cluster.wait_ready()
        nodes = cluster.nodes
        pods = {
            "srv1": (nodes[0], HTTPD),
            "cli3": (nodes[2], SLEEP),
            "srv2": (nodes[1], HTTPD),
            "cli2": (nodes[1], SLEEP),
        }
        for name, (node, command) in pods.items():
            cluster.run_pod(name, node, command)
        result = Net(topology, cluster)
        result.ips = {name: cluster.pod_ip(name) for name in pods}
        yield result
    finally:
        cluster.stop()
        topology.destroy()
        assert_host_namespace_clean()


def _cidr(net: Net, node: str) -> str:
    found = net.cluster.node(node)
    assert found is not None
    return str(found["spec"]["podCIDR"])


def _nft_counter(host: Host, chain: str, verdict: str) -> int:
    data = host.run("nft", "-j", "list", "chain", "inet", "k3py", chain).stdout
    total = 0
    for item in json.loads(data)["nftables"]:
        rule = item.get("rule")
        if not rule:
            continue
        exprs = rule["expr"]
        if any(verdict in e for e in exprs):
            total += sum(e["counter"]["packets"] for e in exprs if "counter" in e)
    return total


def _state(host: Host) -> dict[str, Any]:
    """What the pod network programmed on a host, comparable before and after a restart."""
    nft = host.run("nft", "list", "table", "inet", "k3py").stdout
    rules = sorted(
        line.split(" counter")[0].strip() for line in nft.splitlines() if "saddr" in line
    )
    state: dict[str, Any] = {
        "routes": sorted(host.run("ip", "route", "show", "proto", "107").stdout.splitlines()),
        "rules": rules,
        "addresses": host.run("ip", "-br", "addr", "show", "dev", "cni0").stdout.split()[2:],
    }
    if host.has_link("flannel.1"):
        state["neigh"] = sorted(
            host.run("ip", "neigh", "show", "dev", "flannel.1").stdout.splitlines()
        )
        state["fdb"] = sorted(
            host.run("bridge", "fdb", "show", "dev", "flannel.1").stdout.splitlines()
        )
    return state


def test_pods_get_addresses_from_their_nodes_cidrs_and_nodes_carry_flannels_annotations(
    net: Net,
) -> None:
    cluster = net.cluster
    for name, node_index in (("srv1", 0), ("cli3", 2), ("srv2", 1), ("cli2", 1)):
        cidr = ipaddress.ip_network(_cidr(net, cluster.nodes[node_index]))
        assert ipaddress.ip_address(net.ips[name]) in cidr
        pod = cluster.pod(name)
        assert pod is not None
        assert pod["status"]["podIPs"] == [{"ip": net.ips[name]}]
        inside = cluster.exec(name, "ip", "-o", "-4", "addr", "show", "dev", "eth0").stdout
        assert f"{net.ips[name]}/24" in inside
    assert len({net.ips[n] for n in net.ips}) == 4
    for index, node in enumerate(cluster.nodes):
        found = cluster.node(node)
        assert found is not None
        annotations = found["metadata"]["annotations"]
        assert annotations[ANNOTATION + "backend-type"] == net.backend
        assert annotations[ANNOTATION + "public-ip"] == net.host(index + 1).address
        assert annotations[ANNOTATION + "kube-subnet-manager"] == "true"
        if net.backend == "vxlan":
            data = json.loads(annotations[ANNOTATION + "backend-data"])
            mac = net.host(index + 1).json("ip", "-j", "link", "show", "flannel.1")[0]["address"]
            assert data == {"VNI": 1, "VtepMAC": mac}
            details = net.host(index + 1).json("ip", "-j", "-d", "link", "show", "flannel.1")[0]
            vxlan = details["linkinfo"]["info_data"]
            assert (vxlan["id"], vxlan["port"], vxlan["learning"]) == (1, 8472, False)
            assert details["mtu"] == 1450


def test_a_pod_reaches_a_pod_on_another_host_over_the_backend(net: Net) -> None:
    h1, h3 = net.host(1), net.host(3)
    before = (h1.link_stats(net.device), h3.link_stats(net.device))
    assert PAGE in net.cluster.fetch("cli3", net.ips["srv1"])
    after = (h1.link_stats(net.device), h3.link_stats(net.device))
    assert before[0]
    assert before[1]
    assert after[0]
    assert after[1]
    assert after[0]["rx_packets"] > before[0]["rx_packets"]
    assert after[1]["tx_packets"] > before[1]["tx_packets"]
    srv_cidr = _cidr(net, net.cluster.nodes[0])
    route = h3.run("ip", "route", "show", srv_cidr).stdout
    assert f"dev {net.device}" in route
    assert "proto 107" in route


def test_pods_on_one_host_talk_through_cni0(net: Net) -> None:
    h2 = net.host(2)
    ports = [link["ifname"] for link in h2.json("ip", "-j", "link", "show", "master", "cni0")]
    assert len(ports) == 2

    def sent() -> int:
        return sum((h2.link_stats(p) or {}).get("tx_packets", 0) for p in ports)

    backend_before = h2.link_stats(net.device) or {}
    before = sent()
    assert PAGE in net.cluster.fetch("cli2", net.ips["srv2"])
    assert sent() >= before + 4
    if net.backend == "vxlan":  # the exchange did not leave the host (an IPv6 probe may)
        sent_out = (h2.link_stats(net.device) or {})["tx_packets"] - backend_before["tx_packets"]
        assert sent_out <= 2


def test_traffic_to_the_outside_is_masqueraded_and_pod_to_pod_is_not(net: Net) -> None:
    outside, h3 = net.topology.outside, net.host(3)
    seen = net.cluster.root / f"outside-{net.backend}.txt"
    listener = (
        "import socket,sys\n"
        "s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
        "s.bind(('0.0.0.0', 8080)); s.listen(1)\n"
        "c,a=s.accept(); c.sendall(b'hi\\n'); open(sys.argv[1],'w').write(a[0]); c.close()\n"
    )
    process = outside.popen([sys.executable, "-c", listener, str(seen)], seen.with_suffix(".log"))
    try:
        time.sleep(0.5)
        masqueraded = _nft_counter(h3, "net-postrouting", "masquerade")
        reply = net.cluster.fetch("cli3", outside.address, port=8080)
        assert "hi" in reply
        wait_until(seen.exists, 10, "the outside namespace to see the connection")
        assert seen.read_text() == h3.address
        assert _nft_counter(h3, "net-postrouting", "masquerade") > masqueraded
        masqueraded = _nft_counter(h3, "net-postrouting", "masquerade")
        assert PAGE in net.cluster.fetch("cli3", net.ips["srv1"])
        assert _nft_counter(h3, "net-postrouting", "masquerade") == masqueraded
    finally:
        process.kill()
        process.wait()


def test_an_agent_restart_keeps_addresses_and_duplicates_nothing(net: Net) -> None:
    h3 = net.host(3)
    cluster = net.cluster
    before = _state(h3)
    container = cluster.container_id("cli3")
    readies = cluster.log("h3").read_text().count("pod network ready")
    cluster.restart_agent(3)
    wait_until(
        lambda: cluster.log("h3").read_text().count("pod network ready") > readies,
        30,
        "the restarted agent's pod network",
    )
    cluster.wait_ready()
    time.sleep(2)
    assert cluster.container_id("cli3") == container
    assert cluster.pod_ip("cli3") == net.ips["cli3"]
    assert _state(h3) == before
    assert PAGE in cluster.fetch("cli3", net.ips["srv1"])
    ipam = cluster.root / "h3" / "agent" / "network" / "ipam"
    assert [p.name for p in ipam.iterdir() if p.name[0].isdigit()] == [net.ips["cli3"]]


def test_without_the_server_routes_stay_and_a_restarted_agent_rewires_from_its_state(
    net: Net,
) -> None:
    cluster, h3 = net.cluster, net.host(3)
    before = _state(h3)
    cluster.stop_server()
    try:
        readies = cluster.log("h3").read_text().count("pod network ready")
        cluster.restart_agent(3)
        wait_until(
            lambda: cluster.log("h3").read_text().count("pod network ready") > readies,
            30,
            "the restarted agent's pod network, offline",
        )
        assert _state(h3) == before
        assert PAGE in cluster.fetch("cli3", net.ips["srv1"])
    finally:
        cluster.start_server()
    cluster.wait_ready()
    assert _state(h3) == before
    assert PAGE in cluster.fetch("cli3", net.ips["srv1"])


def test_kubernetes_quick_start_works_across_hosts(net: Net) -> None:
    cluster = net.cluster
    cluster.kubectl(
        "create", "deployment", "web", f"--image={TEST_IMAGE}", "--replicas=3", "--", *HTTPD
    )

    def running() -> list[dict[str, Any]] | None:
        pods = cluster.kubectl_json("get", "pods", "-l", "app=web")["items"]
        ready = [
            p for p in pods if p["status"].get("phase") == "Running" and p["status"].get("podIP")
        ]
        return ready if len(ready) == 3 else None

    pods = wait_until(running, 90, "three web pods Running")
    assert {p["spec"]["nodeName"] for p in pods} == set(cluster.nodes)
    for pod in pods:
        for other in pods:
            if other is not pod:
                page = cluster.fetch(pod["metadata"]["name"], other["status"]["podIP"])
                assert PAGE in page, (pod["metadata"]["name"], other["status"]["podIP"])
    cluster.kubectl("delete", "deployment", "web", "--wait=false")


def test_a_deleted_node_leaves_nothing_behind(net: Net) -> None:
    cluster = net.cluster
    gone = cluster.nodes[2]
    cidr = _cidr(net, gone)
    mac = ""
    if net.backend == "vxlan":
        mac = net.host(3).json("ip", "-j", "link", "show", "flannel.1")[0]["address"]
    cluster.stop_agent(3)
    for container in docker("ps", "-aq", "--filter", f"label=io.k3py.node={gone}").split():
        subprocess.run(["docker", "rm", "-f", container], capture_output=True, check=False)
    cluster.kubectl("delete", "node", gone)
    vtep = str(ipaddress.ip_network(cidr).network_address)

    def clean(host: Host) -> bool:
        routes = host.run("ip", "route").stdout
        if cidr in routes:
            return False
        if net.backend == "vxlan":
            if vtep in host.run("ip", "neigh", "show", "dev", "flannel.1").stdout:
                return False
            if mac in host.run("bridge", "fdb", "show", "dev", "flannel.1").stdout:
                return False
        return True

    for index in (1, 2):
        wait_until(lambda i=index: clean(net.host(i)), 15, f"host {index} to forget {gone}")  # type: ignore[misc]
    assert PAGE in cluster.fetch("cli2", net.ips["srv1"])  # the others still talk
