"""Services benchmark: rule updates, full resyncs, cluster DNS throughput, the agent's memory.

All of it runs in network namespaces this benchmark creates (tests.netns.topology), never in
the machine's own:

- **rules**: the proxier of a node namespace with 1,000 and then 10,000 services (three
  endpoints each) in its cache; one Endpoints object changes at a time (an endpoint leaves,
  then comes back) and the time from the cache update to the transaction committed by the
  kernel is recorded (p50/p99). The full resync (the whole table replaced in one transaction,
  as after an agent restart) is timed at both sizes.
- **dns**: the agent's DNS server (zone of 100 services, forwarding to a resolver on another
  host) answers a client namespace that reaches it through the cluster DNS address
  ``10.43.0.10`` and the node's DNAT, as a pod does; queries per second and p99 for a cluster
  name and a forwarded (cached) name, beside the same forwarded query sent straight to the
  node's resolver in the same run.
- **agent**: a ``k3py server`` and an agent (vxlan pod network, proxy, DNS) on two host
  namespaces; 100 services with endpoints are created and the agent's resident memory is read
  once it is idle.

``python -m bench.services_bench [--quick]`` prints the JSON result.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from k3py.cluster.agent.proxy.nft import NftCommand
from k3py.cluster.agent.proxy.proxier import Proxier
from k3py.cluster.agent.proxy.rules import ProxyConfig, Redirect
from k3py.cluster.agent.proxy.source import ServiceCache

BUDGETS = {
    "endpoints_change_p99_ms_1000_services": 100.0,
    "endpoints_change_p99_ms_10000_services": 100.0,
    "full_resync_s_1000_services": 1.0,
    "agent_rss_mb_dns_proxy_100_services": 45.0,
}
DNS_IP = "10.43.0.10"


def _percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


def _service(i: int) -> dict[str, Any]:
    return {
        "metadata": {"name": f"s{i}", "namespace": "default"},
        "spec": {
            "type": "ClusterIP",
            "clusterIP": f"10.43.{16 + i // 250}.{i % 250 + 1}",
            "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}],
        },
    }


def _endpoints(i: int, count: int = 3) -> dict[str, Any]:
    return {
        "metadata": {"name": f"s{i}", "namespace": "default"},
        "subsets": [
            {
                "addresses": [
                    {"ip": f"10.42.{k}.{i % 250 + 2}", "nodeName": f"n{k}"} for k in range(count)
                ],
                "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            }
        ],
    }


# -- rules -------------------------------------------------------------------------------------


async def _rules_at(netns: str, services: int, changes: int) -> dict[str, float]:
    cache = ServiceCache()
    for i in range(services):
        cache.set_service(_service(i))
        cache.set_endpoints(_endpoints(i))
    proxier = Proxier(cache, NftCommand(netns), ProxyConfig(node_name="n0"))
    started = time.monotonic()
    await proxier.full_sync()
    first_sync = time.monotonic() - started
    started = time.monotonic()
    await proxier.full_sync()  # the table exists: what a restarted agent does
    resync = time.monotonic() - started
    latencies: list[float] = []
    proxier.on_applied = latencies.append
    task = asyncio.create_task(proxier.run())
    try:
        await proxier.wait_applied(0)
        counts = [3] * services
        for n in range(changes):
            # Spread over the table; each change removes or restores one endpoint.
            i = (n * 7919) % services
            counts[i] = 5 - counts[i]
            generation = proxier.generation
            cache.set_endpoints(_endpoints(i, counts[i]))
            await proxier.wait_applied(generation)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await proxier.remove()
    ms = [x * 1000 for x in latencies]
    return {
        "first_sync_s": round(first_sync, 3),
        "full_resync_s": round(resync, 3),
        "change_p50_ms": round(_percentile(ms, 0.5), 2),
        "change_p99_ms": round(_percentile(ms, 0.99), 2),
        "changes": len(ms),
    }


def _rules(quick: bool) -> dict[int, dict[str, float]]:
    netns = f"k3pysvcb-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", netns], check=True)
    try:
        out: dict[int, dict[str, float]] = {}
        for services in (1000, 10000):
            out[services] = asyncio.run(_rules_at(netns, services, 40 if quick else 200))
        return out
    finally:
        subprocess.run(["ip", "netns", "delete", netns], check=False)


# -- dns ---------------------------------------------------------------------------------------

_DNS_SERVER = r"""
import asyncio, json, sys
from k3py.cluster.agent.dns.forward import Forwarder
from k3py.cluster.agent.dns.server import DnsServer
from k3py.cluster.agent.dns.zone import ClusterZone
from k3py.cluster.agent.proxy.source import ServiceCache
address, upstream, services = sys.argv[1], sys.argv[2], int(sys.argv[3])
cache = ServiceCache()
for i in range(services):
    cache.set_service({"metadata": {"name": f"s{i}", "namespace": "default"},
                       "spec": {"clusterIP": f"10.43.{16 + i // 250}.{i % 250 + 1}",
                                "ports": [{"name": "http", "port": 80}]}})
async def main():
    server = DnsServer(ClusterZone(cache), Forwarder([upstream]), address, 53)
    await server.run()
asyncio.run(main())
"""

_LOAD = r"""
import json, socket, sys, time
from dnslib import DNSRecord
server, name, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.settimeout(2)
latencies, errors = [], 0
end = time.monotonic() + seconds
while time.monotonic() < end:
    query = DNSRecord.question(name)
    data = query.pack()
    started = time.monotonic()
    sock.sendto(data, (server, 53))
    try:
        while True:
            answer, _ = sock.recvfrom(4096)
            if answer[:2] == data[:2]:
                break
    except OSError:
        errors += 1
        continue
    latencies.append(time.monotonic() - started)
print(json.dumps({"latencies": latencies, "errors": errors}))
"""


def _load(client: Any, server: str, name: str, seconds: float) -> dict[str, float]:
    """One client sending a query as soon as the last answer came: qps and latency."""
    result = client.run(sys.executable, "-c", _LOAD, server, name, str(seconds), timeout=120)
    data = json.loads(result.stdout)
    latencies = [x * 1000 for x in data["latencies"]] or [float("nan")]
    return {
        "qps": round(len(data["latencies"]) / seconds),
        "p50_ms": round(_percentile(latencies, 0.5), 3),
        "p99_ms": round(_percentile(latencies, 0.99), 3),
        "errors": data["errors"],
    }


def _dns(quick: bool, root: Path) -> dict[str, Any]:
    from tests.netns.services import start_resolver
    from tests.netns.topology import Topology

    seconds = 3.0 if quick else 10.0
    topology = Topology(hosts=2, prefix="k3pysvcb")
    try:
        topology.create()
        node, resolver_host = topology.hosts
        client = topology.outside  # reaches 10.43.0.10 through the node, as a pod does
        client.run("ip", "route", "add", "10.43.0.0/16", "via", node.address)
        start_resolver(resolver_host, resolver_host.address, "198.51.100.7", root / "dns.log")
        node.popen(
            [sys.executable, "-c", _DNS_SERVER, node.address, resolver_host.address, "100"],
            root / "node-dns.log",
        )
        proxier = Proxier(
            ServiceCache(),
            NftCommand(node.netns),
            ProxyConfig(node_name="n0"),
            redirect=Redirect(DNS_IP, 53, node.address, 53),
        )
        asyncio.run(proxier.full_sync())
        deadline = time.monotonic() + 15
        while not node.run("ss", "-Hlun", f"src {node.address}:53", check=False).stdout.strip():
            if time.monotonic() > deadline:
                raise RuntimeError("the node's DNS server did not start")
            time.sleep(0.1)
        return {
            "cluster_name": _load(client, DNS_IP, "s42.default.svc.cluster.local", seconds),
            "forwarded_cached": _load(client, DNS_IP, "www.example.org", seconds),
            "node_resolver_direct": _load(
                client, resolver_host.address, "www.example.org", seconds
            ),
        }
    finally:
        topology.destroy()


# -- agent memory ------------------------------------------------------------------------------


def _agent_rss(quick: bool, root: Path) -> dict[str, Any]:
    from tests.agent.cluster import wait_until
    from tests.netns.cluster import NetnsCluster
    from tests.netns.topology import Topology

    topology = Topology(hosts=2, prefix="k3pysvcb")
    cluster = NetnsCluster(topology, root / "cluster")
    (root / "cluster").mkdir(parents=True, exist_ok=True)
    try:
        topology.create()
        cluster.start()
        cluster.wait_ready()
        items = []
        for i in range(100):
            items.append(_service(i) | {"apiVersion": "v1", "kind": "Service"})
            items.append(_endpoints(i) | {"apiVersion": "v1", "kind": "Endpoints"})
        cluster.kubectl(
            "apply",
            "-f",
            "-",
            stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": items}),
        )
        agent = cluster.agents[2]
        host = topology.hosts[1]

        def programmed() -> bool:
            table = host.run("nft", "list", "table", "inet", "k3py", check=False).stdout
            return table.count(": goto svc-pick-") >= 100

        wait_until(programmed, 60, "100 services in the agent's rules")
        time.sleep(5 if quick else 20)
        status = Path(f"/proc/{agent.pid}/status").read_text()
        rss_kb = next(
            int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS")
        )
        return {"agent_rss_mb": round(rss_kb / 1024, 1)}
    finally:
        cluster.stop()
        topology.destroy()


def run(*, quick: bool = False) -> dict[str, Any]:
    if os.geteuid() != 0 or shutil.which("nft") is None:
        return {"skipped": "needs root and nft"}
    root = Path(tempfile.mkdtemp(prefix="k3py-services-bench-"))
    load_before = os.getloadavg()[0]
    try:
        rules = _rules(quick)
        dns = _dns(quick, root)
        from tests.agent.images import docker_available

        agent = _agent_rss(quick, root) if docker_available() else {"agent_rss_mb": float("nan")}
    except Exception as err:
        raise RuntimeError(f"services benchmark failed; logs in {root}") from err
    shutil.rmtree(root, ignore_errors=True)
    summary = {
        "endpoints_change_p50_ms_1000_services": rules[1000]["change_p50_ms"],
        "endpoints_change_p99_ms_1000_services": rules[1000]["change_p99_ms"],
        "endpoints_change_p50_ms_10000_services": rules[10000]["change_p50_ms"],
        "endpoints_change_p99_ms_10000_services": rules[10000]["change_p99_ms"],
        "full_resync_s_1000_services": rules[1000]["full_resync_s"],
        "full_resync_s_10000_services": rules[10000]["full_resync_s"],
        "dns_qps_cluster_name": dns["cluster_name"]["qps"],
        "dns_p99_ms_cluster_name": dns["cluster_name"]["p99_ms"],
        "dns_qps_forwarded_cached": dns["forwarded_cached"]["qps"],
        "dns_p99_ms_forwarded_cached": dns["forwarded_cached"]["p99_ms"],
        "dns_qps_node_resolver_direct": dns["node_resolver_direct"]["qps"],
        "dns_p99_ms_node_resolver_direct": dns["node_resolver_direct"]["p99_ms"],
        "agent_rss_mb_dns_proxy_100_services": agent["agent_rss_mb"],
    }
    return {
        "benchmark": "services",
        "summary": summary,
        "budget": {
            name: {"budget": budget, "measured": summary[name], "met": summary[name] <= budget}
            for name, budget in BUDGETS.items()
        },
        "rules": rules,
        "dns": dns,
        # The machine may be shared: nft's cost follows the CPU it gets.
        "load_average_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="fewer changes, shorter DNS runs")
    args = parser.parse_args()
    print(json.dumps(run(quick=args.quick), indent=2))


if __name__ == "__main__":
    main()
