"""Services and cluster DNS on a three-host cluster (namespaces, Docker, kubectl): the seed's
walk-through and what a user of K3s relies on after it.

One topology and cluster serve the module. Every host routes through the outside namespace,
which also runs the LAN's resolver (a tiny dnslib server answering every name with
198.51.100.7); the nodes' ``--resolv-conf`` points at it. The deployment runs three replicas
of the air-gap busybox image serving ``/`` (the page), ``/name`` (the pod's name) and
``/cgi-bin/ip`` (the client's address).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from tests.agent.cluster import wait_until
from tests.agent.images import TEST_IMAGE, docker_tier
from tests.netns.cluster import NetnsCluster
from tests.netns.services import fetch, query, start_resolver
from tests.netns.topology import Host, Topology, assert_host_namespace_clean, netns_tier, stop

pytestmark = [*netns_tier(), *docker_tier(), pytest.mark.timeout(300)]

PAGE = "hello from k3py"
OUTSIDE_ANSWER = "198.51.100.7"
SERVE = (
    "mkdir -p /www/cgi-bin && hostname > /www/name"
    " && printf '#!/bin/sh\\necho Content-Type: text/plain\\necho\\necho $REMOTE_ADDR\\n'"
    " > /www/cgi-bin/ip && chmod +x /www/cgi-bin/ip && exec httpd -f -p 80 -h /www"
)
SLEEP = ["sleep", "3600"]


class Services:
    def __init__(self, topology: Topology, cluster: NetnsCluster) -> None:
        self.topology = topology
        self.cluster = cluster
        self.cluster_ip = ""
        self.clients: list[str] = []

    def service(self, name: str) -> dict[str, Any]:
        return dict(self.cluster.kubectl_json("get", "svc", name))

    def endpoint_ips(self, name: str) -> list[str]:
        found = self.cluster.kubectl("get", "endpoints", name, "-o", "json", check=False)
        if found.returncode != 0:
            return []
        subsets = json.loads(found.stdout).get("subsets") or []
        return sorted(a["ip"] for s in subsets for a in s.get("addresses") or [])

    def in_pod(self, pod: str, script: str, timeout: int = 20) -> str:
        return self.cluster.exec(pod, "sh", "-c", script, check=False, timeout=timeout).stdout

    def lookup(self, pod: str, name: str) -> list[str]:
        """Addresses busybox nslookup finds for ``name`` in ``pod``."""
        out = self.in_pod(pod, f"nslookup {name}")
        lines = out.split("Name:", 1)[-1].splitlines() if "Name:" in out else []
        return [line.split()[-1] for line in lines if line.startswith("Address")]

    def resolve(self, pod: str, name: str) -> list[str]:
        """``name`` resolved from ``pod`` the way a libc resolver reads its resolv.conf: a name
        with fewer dots than ``ndots`` is tried with each search domain first. (busybox's
        nslookup applies the search list only to names without a dot, so the test walks it.)"""
        conf = self.in_pod(pod, "cat /etc/resolv.conf").splitlines()
        search = next((line.split()[1:] for line in conf if line.startswith("search")), [])
        ndots = 1
        for line in conf:
            for option in line.split()[1:] if line.startswith("options") else []:
                if option.startswith("ndots:"):
                    ndots = int(option.split(":")[1])
        tries = [f"{name}.{domain}" for domain in search] if name.count(".") < ndots else []
        for candidate in [*tries, name]:
            found = self.lookup(pod, candidate)
            if found:
                return found
        return []

    def rules(self, host: Host) -> list[str]:
        text = host.run("nft", "list", "table", "inet", "k3py", check=False).stdout
        return sorted(line.strip() for line in text.splitlines() if "svc-" in line)


@pytest.fixture(scope="module")
def svc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    root = tmp_path_factory.mktemp("services")
    topology = Topology(3, prefix="k3pysvc")
    resolv = root / "resolv.conf"
    resolv.write_text(f"nameserver {topology.outside.address}\n")
    flags = ("--resolv-conf", str(resolv))
    cluster = NetnsCluster(topology, root, server_args=flags, agent_args=flags)
    try:
        topology.create()
        for host in topology.hosts:
            host.run("ip", "route", "add", "default", "via", topology.outside.address)
        start_resolver(topology.outside, topology.outside.address, OUTSIDE_ANSWER, root / "dns.log")
        cluster.start()
        cluster.wait_ready()
        made = Services(topology, cluster)
        # The seed's walk-through, with the air-gap image.
        cluster.kubectl(
            "create", "deployment", "mynginx", f"--image={TEST_IMAGE}", "--replicas=3",
            "--", "sh", "-c", SERVE,
        )  # fmt: skip
        cluster.kubectl("expose", "deployment", "mynginx", "--port", "80")
        for index, node in enumerate(cluster.nodes, start=1):
            cluster.run_pod(f"client{index}", node, SLEEP)
            made.clients.append(f"client{index}")
        for client in made.clients:
            cluster.pod_ip(client, timeout=90)
        wait_until(lambda: len(made.endpoint_ips("mynginx")) == 3, 120, "three endpoints")
        made.cluster_ip = str(made.service("mynginx")["spec"]["clusterIP"])
        yield made
    finally:
        cluster.stop()
        topology.destroy()
        assert_host_namespace_clean()


def test_kube_dns_service_exists_from_the_first_start(svc: Services) -> None:
    dns = svc.cluster.kubectl_json("get", "svc", "kube-dns", "-n", "kube-system")
    assert dns["spec"]["clusterIP"] == "10.43.0.10"
    assert {(p["name"], p["protocol"]) for p in dns["spec"]["ports"]} >= {
        ("dns", "UDP"),
        ("dns-tcp", "TCP"),
    }


def test_page_by_cluster_ip_from_the_servers_host_and_from_a_pod_on_each_host(
    svc: Services,
) -> None:
    url = f"http://{svc.cluster_ip}/"
    assert wait_until(lambda: fetch(svc.cluster.server_host, url) == [PAGE], 30, "the page")
    for client in svc.clients:
        assert PAGE in svc.cluster.fetch(client, svc.cluster_ip), client


def test_page_by_name_from_a_pod(svc: Services) -> None:
    for name in ("mynginx", "mynginx.default", "mynginx.default.svc.cluster.local"):
        assert svc.resolve("client2", name) == [svc.cluster_ip], name
    resolv = svc.in_pod("client2", "cat /etc/resolv.conf")
    assert "nameserver 10.43.0.10" in resolv
    assert "search default.svc.cluster.local svc.cluster.local cluster.local" in resolv
    assert "ndots:5" in resolv
    env = svc.in_pod("client2", "env")
    assert f"MYNGINX_SERVICE_HOST={svc.cluster_ip}" in env
    assert "KUBERNETES_SERVICE_HOST=10.43.0.1" in env


def test_repeated_requests_see_all_backends_and_affinity_one(svc: Services) -> None:
    host = svc.cluster.server_host
    seen = Counter(fetch(host, f"http://{svc.cluster_ip}/name", 30))
    assert len(seen) == 3, seen
    svc.cluster.kubectl(
        "patch", "svc", "mynginx", "-p", json.dumps({"spec": {"sessionAffinity": "ClientIP"}})
    )
    time.sleep(1)
    sticky = Counter(fetch(host, f"http://{svc.cluster_ip}/name", 15))
    svc.cluster.kubectl(
        "patch", "svc", "mynginx", "-p", json.dumps({"spec": {"sessionAffinity": "None"}})
    )
    assert len(sticky) == 1, sticky


def test_node_port_and_load_balancer_from_the_lan_on_every_host(svc: Services) -> None:
    cluster, outside = svc.cluster, svc.topology.outside
    cluster.kubectl("patch", "svc", "mynginx", "-p", '{"spec": {"type": "LoadBalancer"}}')
    addresses = sorted(h.address for h in svc.topology.hosts)

    def ingress() -> bool:
        entries = (svc.service("mynginx").get("status") or {}).get("loadBalancer") or {}
        return sorted(e["ip"] for e in entries.get("ingress") or []) == addresses

    wait_until(ingress, 30, "the load balancer's ingress")
    shown = cluster.kubectl("get", "svc", "mynginx").stdout
    assert addresses[0] in shown  # EXTERNAL-IP
    node_port = svc.service("mynginx")["spec"]["ports"][0]["nodePort"]
    assert 30000 <= node_port <= 32767
    for host in svc.topology.hosts:
        for port in (node_port, 80):
            got = wait_until(
                lambda h=host, p=port: fetch(outside, f"http://{h.address}:{p}/") == [PAGE],  # type: ignore[misc]
                10,
                f"{host.address}:{port} from the LAN",
            )
            assert got

    # externalTrafficPolicy Local: the backend sees the client's own address.
    cluster.kubectl("patch", "svc", "mynginx", "-p", '{"spec": {"externalTrafficPolicy": "Local"}}')
    time.sleep(1)
    for host in svc.topology.hosts:
        (source,) = fetch(outside, f"http://{host.address}:{node_port}/cgi-bin/ip")
        # busybox httpd listens dual-stack: an IPv4 peer shows as [::ffff:a.b.c.d].
        assert source.removeprefix("[::ffff:").removesuffix("]") == outside.address, host.name


def test_cluster_dns_records_and_forwarding(svc: Services) -> None:
    cluster = svc.cluster
    cluster.apply(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {
                "selector": {"app": "mynginx"},
                "ports": [{"name": "http", "port": 8080, "targetPort": 80}],
            },
        }
    )
    cluster.apply(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "headless", "namespace": "default"},
            "spec": {"clusterIP": "None", "selector": {"app": "mynginx"}, "ports": [{"port": 80}]},
        }
    )
    wait_until(lambda: len(svc.endpoint_ips("headless")) == 3, 30, "headless endpoints")
    web_ip = str(svc.service("web")["spec"]["clusterIP"])
    host = svc.topology.hosts[1]

    def ask(name: str, qtype: str = "A") -> list[str]:
        return query(host, "10.43.0.10", name, qtype)

    wait_until(lambda: ask("web.default.svc.cluster.local") == ["NOERROR", web_ip], 10, "web")
    assert ask("web.default.svc.cluster.local", "SRV") == [
        "NOERROR",
        "0 100 8080 web.default.svc.cluster.local.",
    ]
    pods = svc.endpoint_ips("mynginx")
    assert ask("headless.default.svc.cluster.local") == ["NOERROR", *pods]
    reverse = ".".join(reversed(web_ip.split("."))) + ".in-addr.arpa"
    assert ask(reverse, "PTR") == ["NOERROR", "web.default.svc.cluster.local."]
    assert ask("nothing.default.svc.cluster.local") == ["NXDOMAIN"]
    assert ask("www.example.org") == ["NOERROR", OUTSIDE_ANSWER]
    assert query(host, "10.43.0.10", "web.default.svc.cluster.local", tcp=True)[1] == web_ip
    # From a pod too (its queries to 10.43.0.10 reach its own node's agent).
    assert svc.resolve("client3", "www.example.org") == [OUTSIDE_ANSWER]


def test_a_deleted_endpoint_leaves_rotation_within_a_second(svc: Services) -> None:
    cluster = svc.cluster
    before = svc.endpoint_ips("mynginx")
    pods = cluster.kubectl_json("get", "pods", "-l", "app=mynginx")["items"]
    victim = pods[0]
    victim_ip = victim["status"]["podIP"]
    cluster.kubectl("delete", "pod", victim["metadata"]["name"], "--wait=false")
    wait_until(lambda: victim_ip not in svc.endpoint_ips("mynginx"), 30, "the endpoint's removal")
    seen_at = time.monotonic()
    for host in svc.topology.hosts:
        wait_until(
            lambda h=host: not any(victim_ip in line for line in svc.rules(h)),  # type: ignore[misc]
            1.0,
            f"{victim_ip} out of {host.name}'s rules",
            interval=0.05,
        )
    assert time.monotonic() - seen_at < 1.5
    assert victim_ip in before
    wait_until(lambda: len(svc.endpoint_ips("mynginx")) == 3, 90, "the replacement endpoint")


def test_agent_restart_and_deleted_service_leave_no_stale_rule(svc: Services) -> None:
    cluster, host = svc.cluster, svc.topology.hosts[1]
    wait_until(lambda: len(svc.endpoint_ips("mynginx")) == 3, 90, "three endpoints")
    time.sleep(1)
    before = [r for r in svc.rules(host) if "affinity" not in r]
    cluster.restart_agent(2)
    time.sleep(3)
    wait_until(lambda: [r for r in svc.rules(host) if "affinity" not in r] == before, 30, "rules")
    web_ip = cluster.kubectl(
        "get", "svc", "web", "-o", "jsonpath={.spec.clusterIP}", check=False
    ).stdout.strip()
    cluster.kubectl("delete", "svc", "web", "--ignore-not-found")

    def gone(h: Host) -> bool:
        table = h.run("nft", "list", "table", "inet", "k3py", check=False).stdout
        named = any("default/web/" in r for r in svc.rules(h))
        return not named and not (web_ip and f"{web_ip} . " in table)

    for each in svc.topology.hosts:
        wait_until(
            lambda h=each: gone(h),  # type: ignore[misc]
            10,
            "the deleted service's rules gone",
        )


def test_a_pod_lists_its_namespace_through_the_kubernetes_service(svc: Services) -> None:
    """In-cluster credentials: the mounted token and ca.crt, the API at KUBERNETES_SERVICE_HOST
    (10.43.0.1, proxied to the server's host) from a pod on another host."""
    from tests.agent.test_incluster import client_pod

    cluster, ns = svc.cluster, "incluster"
    cluster.kubectl("create", "namespace", ns)
    cluster.kubectl("create", "role", "pods", "-n", ns, "--verb=list", "--resource=pods")
    cluster.kubectl(
        "create", "rolebinding", "pods", "-n", ns, "--role=pods", f"--serviceaccount={ns}:default"
    )
    pod = client_pod(ns, False)
    pod["spec"]["nodeName"] = cluster.nodes[-1]
    cluster.apply(pod)

    def output() -> str:
        logs = cluster.kubectl("logs", "client", "-n", ns, check=False).stdout
        return logs if "DONE" in logs else ""

    wait_until(lambda: bool(output()), 90, "the client pod's output")
    out = output()
    assert "HOST=10.43.0.1" in out, out
    assert f"{ns} 200 PodList ['client']" in out, out
    assert "default 403 Forbidden" in out, out


def test_names_resolve_and_services_answer_while_the_server_is_stopped(svc: Services) -> None:
    cluster = svc.cluster
    assert cluster.server is not None
    stop(cluster.server)
    try:
        assert svc.resolve("client2", "mynginx") == [svc.cluster_ip]
        assert PAGE in cluster.fetch("client2", svc.cluster_ip)
        assert query(svc.topology.hosts[2], "10.43.0.10", "www.example.org") == [
            "NOERROR",
            OUTSIDE_ANSWER,
        ]
    finally:
        cluster.server = None
