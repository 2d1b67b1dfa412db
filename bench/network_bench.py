"""The pod network's benchmark: pod-to-pod TCP against the plain LAN, wiring and routing times.

For each of ``vxlan`` and ``host-gw`` a fresh three-host topology (:mod:`tests.netns.topology`)
runs a cluster (:mod:`tests.netns.cluster`). In it :mod:`bench.netperf` measures TCP throughput and
round-trip time between the host namespaces of hosts 1 and 3 over the plain LAN bridge (the
baseline) and between a pod on host 1 and a pod on host 3 (both ends entered through the sandbox's
PID with ``nsenter``), runs interleaved; each pod figure is reported with its ratio to the
baseline. The LAN of veths is limited only by the CPU, so the pods' extra hops (a veth and the
bridge at each end, the encapsulation) count in full; the same pair is then measured with each
host's LAN port limited to 1 Gbit/s (``tc tbf``), the speed of a board's Ethernet, where the ratio
shows what a user of the boards gets. With ``vxlan`` it also measures, ten times, how long after
the API was asked to create a new Node (with a pod CIDR and flannel's annotations) the route to it
exists on another host, and the agents' resident memory with the network running and a pod.
Finally, in a one-host topology, 100 real Docker sandboxes (the pause image, network ``none``) are
wired through the network's own code (:mod:`tests.netns.churn`) and timed from the sandbox's start
to its address answering. The agents' memory is compared with the same agents run with ``--flannel-
backend none``. Everything runs in namespaces the benchmark creates.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.agent.cluster import docker
from tests.netns.cluster import NetnsCluster
from tests.netns.topology import Host, Topology, stop

PORT = 5201
PAUSE_IMAGE = "k3py/pause:1"
LINK_RATE = "1gbit"  # the boards' Ethernet (Raspberry Pi 4: 1000BASE-T)


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


def _netperf(*args: str) -> list[str]:
    return [sys.executable, "-m", "bench.netperf", *args]


def _client(prefix: list[str], address: str, *args: str, timeout: float) -> dict[str, float]:
    out = subprocess.run(
        [*prefix, *_netperf("client", address, "--port", str(PORT), *args)],
        capture_output=True, text=True, check=True, timeout=timeout,
    ).stdout  # fmt: skip
    return dict(json.loads(out))


def _compare(
    paths: dict[str, tuple[list[str], list[str], str]], seconds: float, log: Path, runs: int
) -> dict[str, dict[str, float]]:
    """Throughput (median of ``runs``) and round trips for each path, the runs interleaved.

    ``paths`` maps a name to (server prefix, client prefix, server address). Interleaving
    makes a ratio between paths robust against the machine's load changing during the run.
    """
    servers = [
        subprocess.Popen(
            [*server, *_netperf("server", "--port", str(PORT))],
            stdout=log.open("ab"),
            stderr=subprocess.STDOUT,
        )
        for server, _, _ in paths.values()
    ]
    try:
        rates: dict[str, list[float]] = {name: [] for name in paths}
        for _ in range(runs):
            for name, (_, client, address) in paths.items():
                result = _client(
                    client, address, "--mode", "stream", "--seconds", str(seconds),
                    timeout=seconds + 60,
                )  # fmt: skip
                rates[name].append(result["bits_per_second"])
        figures = {}
        for name, (_, client, address) in paths.items():
            rtt = _client(client, address, "--mode", "pingpong", "--rounds", "2000", timeout=120)
            figures[name] = {"gbit_s": round(_percentile(rates[name], 0.5) / 1e9, 3), **rtt}
    finally:
        for server in servers:
            stop(server, 5)
    return figures


def _shape(hosts: list[Host], rate: str) -> None:
    """Limit what each host sends on the LAN to ``rate``, as a board's Ethernet port would."""
    for host in hosts:
        host.run(
            "tc", "qdisc", "replace", "dev", host.iface, "root", "tbf",
            "rate", rate, "burst", "512kb", "latency", "20ms",
        )  # fmt: skip


def _sandbox_pid(cluster: NetnsCluster, pod: str) -> int:
    ids = docker(
        "ps", "-q",
        "--filter", f"label=io.kubernetes.pod.name={pod}",
        "--filter", "label=io.k3py.container.kind=sandbox",
    ).split()  # fmt: skip
    for container in ids:
        node, pid = docker(
            "inspect", "-f", '{{index .Config.Labels "io.k3py.node"}} {{.State.Pid}}', container
        ).split()
        if node in cluster.nodes:
            return int(pid)
    raise RuntimeError(f"no sandbox for pod {pod}")


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def _route_times(cluster: NetnsCluster, watcher: Host, rounds: int) -> list[float]:
    """Milliseconds from the API accepting a new Node to the route on ``watcher``."""
    times = []
    for index in range(rounds):
        name = f"{cluster.topology.prefix}-ghost{index}"
        cidr = f"10.42.{200 + index}.0/24"
        node = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": name,
                "annotations": {
                    "flannel.alpha.coreos.com/backend-type": "vxlan",
                    "flannel.alpha.coreos.com/kube-subnet-manager": "true",
                    "flannel.alpha.coreos.com/public-ip": f"192.0.2.{100 + index}",
                    "flannel.alpha.coreos.com/backend-data": json.dumps(
                        {"VNI": 1, "VtepMAC": f"02:00:00:00:01:{index:02x}"}
                    ),
                },
            },
            "spec": {"podCIDR": cidr, "podCIDRs": [cidr]},
        }
        wait = subprocess.Popen(
            watcher.argv(*_netperf("routewait", cidr, "--seconds", "30")),
            stdout=subprocess.PIPE,
            text=True,
        )
        time.sleep(0.3)  # the watcher polls
        created = cluster.server_host.run(
            sys.executable, "-m", "bench.network_bench", "create-node",
            str(cluster.kubeconfig), json.dumps(node),
        ).stdout  # fmt: skip
        sent = json.loads(created)["sent"]
        out, _ = wait.communicate(timeout=60)
        seen = json.loads(out)["seen"]
        if seen:
            times.append((seen - sent) * 1000)
        cluster.kubectl("delete", "node", name, "--wait=false")
    return times


def _backend(backend: str, root: Path, seconds: float, rounds: int, runs: int) -> dict[str, Any]:
    with Topology(3) as topology:
        h1, h3 = topology.hosts[0], topology.hosts[2]
        with NetnsCluster(topology, root / backend, backend=backend) as cluster:
            cluster.wait_ready()
            cluster.run_pod("bench-a", cluster.nodes[0], ["sleep", "3600"])
            cluster.run_pod("bench-b", cluster.nodes[2], ["sleep", "3600"])
            address = cluster.pod_ip("bench-b")
            cluster.pod_ip("bench-a")
            enter_a = ["nsenter", "-t", str(_sandbox_pid(cluster, "bench-a")), "-n"]
            enter_b = ["nsenter", "-t", str(_sandbox_pid(cluster, "bench-b")), "-n"]
            paths = {
                "lan": (h3.argv(), h1.argv(), h3.address),
                "pods": (enter_b, enter_a, address),
            }
            log = root / f"{backend}-netperf.log"
            result: dict[str, Any] = _compare(paths, seconds, log, runs)
            _shape(topology.hosts, LINK_RATE)
            shaped = _compare(paths, seconds, log, runs)
            result["lan_1gbit"], result["pods_1gbit"] = shaped["lan"], shaped["pods"]
            if backend == "vxlan":
                result["node_to_route_ms"] = _route_times(cluster, topology.hosts[1], rounds)
            for index, node in enumerate(cluster.nodes[1:], start=1):
                cluster.run_pod(f"bench-idle-{index}", node, ["sleep", "3600"])
                cluster.pod_ip(f"bench-idle-{index}")
            time.sleep(10)  # idle, the network running, a pod on each agent's node
            result["agent_rss_mb"] = [_rss_mb(process.pid) for process in cluster.agents.values()]
    return result


def _rss_without_network(root: Path) -> list[float]:
    """The same agents with ``--flannel-backend none``: what the network adds is the difference."""
    with Topology(3) as topology, NetnsCluster(topology, root / "none", backend="none") as cluster:
        cluster.wait_ready()
        for index, node in enumerate(cluster.nodes):
            cluster.run_pod(f"bench-{index}", node, ["sleep", "3600"])
        for index in range(len(cluster.nodes)):
            cluster.pod_ip(f"bench-{index}")
        time.sleep(10)
        return [_rss_mb(process.pid) for process in cluster.agents.values()]


def _sandboxes(count: int) -> dict[str, Any]:
    with Topology(1) as topology:
        out = topology.hosts[0].run(
            sys.executable, "-m", "tests.netns.churn",
            "--count", str(count), "--docker", PAUSE_IMAGE, "--kill", "0",
            timeout=600,
        ).stdout  # fmt: skip
    return dict(json.loads(out))


def run(*, quick: bool = False) -> dict[str, Any]:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        return {"skipped": "needs root and ip netns"}
    from tests.agent.images import docker_available

    if not docker_available():
        return {"skipped": "no Docker engine answers (make docker-engine starts one)"}
    seconds = 2.0 if quick else 4.0
    rounds = 5 if quick else 10
    root = Path(tempfile.mkdtemp(prefix="k3py-network-bench-"))
    try:
        runs = 3 if quick else 5
        backends = {b: _backend(b, root, seconds, rounds, runs) for b in ("vxlan", "host-gw")}
        without = _rss_without_network(root)
        churn = _sandboxes(30 if quick else 100)
    except Exception as err:
        raise RuntimeError(f"network benchmark failed; logs in {root}") from err
    shutil.rmtree(root, ignore_errors=True)
    summary: dict[str, float] = {}
    budget: dict[str, Any] = {}
    for name, figures in backends.items():
        key = name.replace("-", "_")
        for suffix, lan, pods in (
            ("", figures["lan"], figures["pods"]),
            ("_1gbit", figures["lan_1gbit"], figures["pods_1gbit"]),
        ):
            ratio = round(pods["gbit_s"] / lan["gbit_s"], 2) if lan["gbit_s"] else 0.0
            summary[f"{key}{suffix}_throughput_gbit_s"] = pods["gbit_s"]
            summary[f"{key}{suffix}_lan_throughput_gbit_s"] = lan["gbit_s"]
            summary[f"{key}{suffix}_throughput_ratio"] = ratio
            budget[f"{key}{suffix}_throughput_ratio"] = {"minimum": 0.9, "met": ratio >= 0.9}
        lan, pods = figures["lan"], figures["pods"]
        summary[f"{key}_rtt_p50_us"] = round(pods["rtt_p50_us"], 1)
        summary[f"{key}_lan_rtt_p50_us"] = round(lan["rtt_p50_us"], 1)
        summary[f"{key}_rtt_ratio"] = round(lan["rtt_p50_us"] / pods["rtt_p50_us"], 2)
    routes = backends["vxlan"].get("node_to_route_ms") or [float("nan")]
    summary["new_node_to_route_p50_ms"] = round(_percentile(routes, 0.5), 1)
    summary["new_node_to_route_max_ms"] = round(max(routes), 1)
    answer, attach = churn["answer_ms"], churn["attach_ms"]
    summary["sandbox_to_address_p50_ms"] = round(_percentile(answer, 0.5), 1)
    summary["sandbox_to_address_p99_ms"] = round(_percentile(answer, 0.99), 1)
    budget["sandbox_to_address_p99_ms"] = {
        "budget": 50,
        "met": summary["sandbox_to_address_p99_ms"] <= 50,
    }
    rss = [*backends["vxlan"]["agent_rss_mb"], *backends["host-gw"]["agent_rss_mb"]]
    summary["agent_rss_with_network_mb"] = max(rss)
    summary["agent_rss_without_network_mb"] = max(without)
    budget["agent_rss_with_network_mb"] = {"budget": 45, "met": max(rss) <= 45}
    return {
        "benchmark": "network",
        "summary": summary,
        "budget": budget,
        "details": {
            **backends,
            "sandboxes": len(answer),
            "attach_p99_ms": _percentile(attach, 0.99),
        },
        "quick": quick,
    }


async def _create_node(kubeconfig: str, node: dict[str, Any]) -> dict[str, float]:
    from k3py.cluster.api.resources import by_kind
    from k3py.cluster.client import KubeClient

    nodes = by_kind("v1", "Node")
    assert nodes is not None
    async with KubeClient.from_kubeconfig(kubeconfig) as client:
        await client.list(nodes)  # the connection is up before the clock starts
        sent = time.time()
        await client.create(nodes, node)
        return {"sent": sent, "accepted": time.time()}


def main() -> None:
    if sys.argv[1:2] == ["create-node"]:
        import asyncio

        print(json.dumps(asyncio.run(_create_node(sys.argv[2], json.loads(sys.argv[3])))))
        return
    print(json.dumps(run(quick="--quick" in sys.argv), indent=2))


if __name__ == "__main__":
    main()
