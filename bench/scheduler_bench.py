"""Scheduler and hollow-node benchmark: placement throughput, a large Deployment, idle cost.

Two measurements:

* **in process** — the real :class:`Scheduler` over the in-memory fake API with N hollow nodes:
  the scheduling code's own throughput (pods/s), without HTTP or a datastore.
* **through the API** — ``k3py server`` (SQLite, loopback, controllers and scheduler inside)
  with N hollow nodes served from this process (:mod:`tests.controllers.hollow`: Nodes and
  Leases renewed every 10 s like kubelets, pod status reported as a kubelet would). Reported:
  node registration time; the server's RSS and CPU while the nodes idle; P bare pods created
  as fast as the server takes them, with the time until all are bound (pods/s end to end) and
  all Running; then a Deployment of R replicas: its pods created by the controllers through the
  API until all are bound (the whole path's pods/s) and until it is fully available.

The through-the-API phase runs twice in one run: with the server's control plane over its
loopback HTTPS client (``K3PY_CONTROL_PLANE_OVER_HTTP=1``, as before the in-process client) and
in process (the default), so the two figures share the machine's load at the time.

The hollow nodes and the pod creator share this process and the machine's cores with the
server, so end-to-end figures are a floor. ``python -m bench.scheduler_bench`` prints JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

from k3py.cluster.client import EventRecorder, Informer, KubeClient, RealClock
from k3py.cluster.client.fake import FakeApi
from k3py.cluster.server.controllers.base import DEPLOYMENTS, NODES, PODS
from k3py.cluster.server.controllers.serving import OVER_HTTP
from k3py.cluster.server.scheduler import Scheduler
from tests.controllers.hollow import HollowNodes, node_object
from tests.controllers.serverproc import ServerProcess

Object = dict[str, Any]
SCHEDULING_BUDGET = 300  # pods/s with 1,000 nodes


def big_deployment(replicas: int) -> Object:
    """The Deployment both the benchmark and its profile create over the hollow nodes."""
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "big", "namespace": "default"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "big"}},
            "template": {
                "metadata": {"labels": {"app": "big"}},
                "spec": {"containers": [{"name": "app", "image": "registry.example/big:1"}]},
            },
        },
    }


def _pod(name: str, owner: int) -> Object:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": "default",
            "labels": {"bench": "pods", "group": str(owner)},
        },
        "spec": {
            "containers": [
                {
                    "name": "app",
                    "image": "registry.example/app:1",
                    "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}},
                }
            ]
        },
    }


async def in_process(nodes: int, pods: int) -> dict[str, Any]:
    clock = RealClock()
    api = FakeApi(clock)
    for i in range(nodes):
        await api.create(NODES, node_object(f"hollow-{i:04d}", "4", "8Gi", "110", {}))
    pod_informer, node_informer = (
        Informer(api, PODS, clock=clock),
        Informer(api, NODES, clock=clock),
    )
    recorder = EventRecorder(api, clock, "default-scheduler")
    scheduler = Scheduler(api, pod_informer, node_informer, recorder, clock)
    pod_informer.start()
    node_informer.start()
    await pod_informer.synced.wait()
    await node_informer.synced.wait()
    tasks = [asyncio.create_task(scheduler.run()), asyncio.create_task(recorder.run())]
    started = time.perf_counter()
    for i in range(pods):
        await api.create(PODS, _pod(f"p{i}", i % 100))
        if i % 200 == 0:
            await asyncio.sleep(0)
    await _wait("all pods scheduled", lambda: scheduler.scheduled >= pods, 600, poll=0.01)
    seconds = time.perf_counter() - started
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await pod_informer.stop()
    await node_informer.stop()
    return {"nodes": nodes, "pods": pods, "seconds": round(seconds, 2),
            "pods_per_s": round(pods / seconds, 1)}  # fmt: skip


def _proc_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _proc_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def _self_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _wait(what: str, check: Any, seconds: float, poll: float = 0.1) -> float:
    """Wait until ``check()`` holds; the moment it was seen (perf_counter)."""
    started = time.perf_counter()
    while not check():
        if time.perf_counter() - started > seconds:
            raise TimeoutError(f"{what} did not happen within {seconds:.0f} s")
        await asyncio.sleep(poll)
    return time.perf_counter()


async def through_api(
    workdir: Path,
    nodes: int,
    pods: int,
    replicas: int,
    idle_seconds: float,
    *,
    over_http: bool = False,
) -> dict[str, Any]:
    server = ServerProcess(workdir, "--disable-agent")
    if over_http:
        os.environ[OVER_HTTP] = "1"
    try:
        await server.start()
    finally:
        os.environ.pop(OVER_HTTP, None)
    assert server.process is not None
    pid = server.process.pid
    client = KubeClient.from_kubeconfig(server.kubeconfig)
    hollow = HollowNodes(client, renew_interval=10.0, concurrency=64)
    result: dict[str, Any] = {"nodes": nodes, "pods": pods, "deployment_replicas": replicas}
    try:
        await hollow.start(kubelets=16)
        started = time.perf_counter()
        await hollow.add([f"hollow-{i:04d}" for i in range(nodes)])
        result["register_nodes_s"] = round(time.perf_counter() - started, 2)
        await asyncio.sleep(5)  # pod CIDRs assigned, first renewals through
        cpu_before, self_before = _proc_cpu_seconds(pid), _self_cpu()
        await asyncio.sleep(idle_seconds)
        result["idle"] = {
            "seconds": idle_seconds,
            "server_rss_mb": _proc_rss_mb(pid),
            "server_cpu_percent": round(
                100 * (_proc_cpu_seconds(pid) - cpu_before) / idle_seconds, 1
            ),
            "hollow_nodes_cpu_percent": round(100 * (_self_cpu() - self_before) / idle_seconds, 1),
        }

        cache = hollow.pods

        def bench_pods() -> list[Object]:
            return [p for p in cache.list("default") if p["metadata"]["name"].startswith("bench-")]

        gate = asyncio.Semaphore(64)

        async def create(i: int) -> None:
            async with gate:
                await client.create(PODS, _pod(f"bench-{i}", i % 100), "default")

        cpu_before = _proc_cpu_seconds(pid)
        started = time.perf_counter()
        await asyncio.gather(*(create(i) for i in range(pods)))
        created = time.perf_counter() - started
        bound = (
            await _wait(
                "all pods bound",
                lambda: sum(1 for p in bench_pods() if p["spec"].get("nodeName")) >= pods,
                600,
            )
            - started
        )
        running = (
            await _wait(
                "all pods Running",
                lambda: sum(
                    1 for p in bench_pods() if (p.get("status") or {}).get("phase") == "Running"
                )
                >= pods,
                600,
            )
            - started
        )
        result["pods_through_api"] = {
            "created_s": round(created, 2),
            "all_bound_s": round(bound, 2),
            "all_running_s": round(running, 2),
            "scheduled_pods_per_s": round(pods / bound, 1),
            "server_cpu_seconds": round(_proc_cpu_seconds(pid) - cpu_before, 1),
        }

        deployment = big_deployment(replicas)
        started = time.perf_counter()
        await client.create(DEPLOYMENTS, deployment, "default")

        def deployment_bound() -> int:
            return sum(
                1
                for p in cache.list("default")
                if (p["metadata"].get("labels") or {}).get("app") == "big"
                and p["spec"].get("nodeName")
            )

        bound = await _wait(
            "the Deployment's pods bound", lambda: deployment_bound() >= replicas, 600
        )
        result["deployment_all_bound_s"] = round(bound - started, 2)
        result["deployment_scheduled_pods_per_s"] = round(replicas / (bound - started), 1)
        available = 0
        while available < replicas:
            if time.perf_counter() - started > 900:
                raise TimeoutError("the Deployment did not become available within 900 s")
            await asyncio.sleep(0.5)
            status = (await client.get(DEPLOYMENTS, "big", "default")).get("status") or {}
            available = int(status.get("availableReplicas") or 0)
        result["deployment_all_running_s"] = round(time.perf_counter() - started, 2)
        result["server_rss_mb_after"] = _proc_rss_mb(pid)
    finally:
        await hollow.stop()
        await client.close()
        await server.stop()
    return result


def run(
    *,
    quick: bool = False,
    nodes: int = 1000,
    pods: int = 10000,
    replicas: int = 1000,
    directory: Path | None = None,
) -> dict[str, Any]:
    """Measure the scheduler in process and the whole control plane through the API."""
    if quick:
        pods, replicas = min(pods, 1000), min(replicas, 200)
    idle = 10.0 if quick else 30.0
    results: dict[str, Any] = {"benchmark": "scheduler"}
    results["in_process"] = asyncio.run(in_process(nodes, pods))
    results["load_average_before"] = list(os.getloadavg())
    with tempfile.TemporaryDirectory(prefix="k3py-scheduler-bench-", dir=directory) as tmp:
        results["through_api_over_http"] = asyncio.run(
            through_api(Path(tmp), nodes, pods, replicas, idle, over_http=True)
        )
    with tempfile.TemporaryDirectory(prefix="k3py-scheduler-bench-", dir=directory) as tmp:
        results["through_api"] = asyncio.run(through_api(Path(tmp), nodes, pods, replicas, idle))
    results["load_average_after"] = list(os.getloadavg())
    api = results["through_api"]
    http = results["through_api_over_http"]
    results["summary"] = {
        "scheduler_pods_per_s_in_process": results["in_process"]["pods_per_s"],
        "deployment_scheduled_pods_per_s_through_api": api["deployment_scheduled_pods_per_s"],
        "deployment_scheduled_pods_per_s_control_plane_over_http": http[
            "deployment_scheduled_pods_per_s"
        ],
        "scheduled_pods_per_s_through_api": api["pods_through_api"]["scheduled_pods_per_s"],
        "scheduled_pods_per_s_control_plane_over_http": http["pods_through_api"][
            "scheduled_pods_per_s"
        ],
        "deployment_all_running_s": api["deployment_all_running_s"],
        "idle_server_rss_mb": api["idle"]["server_rss_mb"],
        "idle_server_cpu_percent": api["idle"]["server_cpu_percent"],
    }
    # architecture.md: at least 300 pods/s placed with 1,000 nodes.
    measured = results["in_process"]["pods_per_s"]
    whole_path = api["deployment_scheduled_pods_per_s"]
    results["budget"] = {
        "scheduler_pods_per_s_in_process_min": SCHEDULING_BUDGET,
        "met": measured >= SCHEDULING_BUDGET and nodes >= 1000,
        "deployment_scheduled_pods_per_s_through_api": {
            "minimum": SCHEDULING_BUDGET,
            "met": whole_path >= SCHEDULING_BUDGET and nodes >= 1000,
        },
    }
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="fewer pods (smoke run)")
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--pods", type=int, default=10000)
    parser.add_argument("--replicas", type=int, default=1000)
    parser.add_argument("--dir", type=Path, help="where to put the server's data (default /tmp)")
    args = parser.parse_args()
    result = run(
        quick=args.quick,
        nodes=args.nodes,
        pods=args.pods,
        replicas=args.replicas,
        directory=args.dir,
    )
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
