"""Agent benchmark on the real Docker engine: memory, idle CPU, pod start latency.

A ``k3py server`` and one ``k3py agent`` run as subprocesses on loopback (the agent with a
unique node name, its containers removed at the end). Measured: the agent's resident memory
idle and with 20 pods, its CPU use while idle (no pods, then 20 pods), and the time from a
pod's creation to the agent reporting it Running (image present, pods bound to the node
directly), p50/p99 over 100 pods created one after another, each once the previous runs.
``run()`` returns a dict for the benchmark runner; ``python -m bench.agent_bench`` prints it
as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from k3py.cluster.api.resources import by_kind
from k3py.cluster.client import KubeClient
from tests.processes import free_port, k3py_argv, server_argv, stop_process

PODS = by_kind("v1", "Pod")
NODES = by_kind("v1", "Node")
IMAGE = "k3py-test/busybox:1"
TICKS = os.sysconf("SC_CLK_TCK")


def _percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


def _status(pid: int) -> dict[str, int]:
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in {"VmRSS", "VmHWM"}:
            values[key] = int(rest.split()[0])
    return values


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def _pod(name: str, node: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "nodeName": node,
            "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "main", "image": IMAGE, "command": ["sleep", "3600"]}],
        },
    }


class Bench:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.node = f"bench-{secrets.token_hex(3)}"
        self.kubeconfig = root / "kubeconfig"
        self.processes: list[subprocess.Popen[bytes]] = []
        self.agent: subprocess.Popen[bytes] | None = None

    def _spawn(self, argv: list[str], *, log: str) -> subprocess.Popen[bytes]:
        with (self.root / log).open("ab") as out:
            process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
        self.processes.append(process)
        return process

    def start(self) -> None:
        self._spawn(
            server_argv(self.root / "server", self.kubeconfig, self.port, "--disable-agent"),
            log="server.log",
        )
        token = self.root / "server" / "server" / "token"
        deadline = time.monotonic() + 30
        while not (self.kubeconfig.exists() and token.exists()):
            if time.monotonic() > deadline:
                raise RuntimeError("the server did not start; see server.log")
            time.sleep(0.1)
        self.agent = self._spawn(
            k3py_argv(
                "agent",
                "--server",
                f"https://127.0.0.1:{self.port}",
                "--token-file",
                str(token),
                "--data-dir",
                str(self.root / "agent"),
                "--node-name",
                self.node,
            ),
            log="agent.log",
        )

    def stop(self) -> None:
        for process in reversed(self.processes):
            stop_process(process)
        ids = subprocess.run(
            ["docker", "ps", "-aq", "--filter", f"label=io.k3py.node={self.node}"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.split()
        if ids:
            subprocess.run(["docker", "rm", "-f", *ids], capture_output=True, check=False)


async def _wait_node_ready(client: KubeClient, node: str, seconds: float) -> None:
    assert NODES is not None
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            obj = await client.get(NODES, node)
            conditions = obj.get("status", {}).get("conditions") or []
            if any(c["type"] == "Ready" and c["status"] == "True" for c in conditions):
                return
        except Exception:
            pass
        await asyncio.sleep(0.2)
    raise RuntimeError(f"node {node} did not become Ready")


async def _start_pods(client: KubeClient, node: str, names: list[str]) -> dict[str, float]:
    """Create pods and return each one's seconds from creation to Running (reported)."""
    assert PODS is not None
    _, version = await client.list(PODS, "default")
    created: dict[str, float] = {}
    running: dict[str, float] = {}
    done = asyncio.Event()

    async def watch() -> None:
        async for _, obj in client.watch(PODS, "default", resource_version=version):
            name = obj.get("metadata", {}).get("name")
            phase = (obj.get("status") or {}).get("phase")
            if name in created and name not in running and phase == "Running":
                running[name] = time.perf_counter() - created[name]
                if len(running) == len(names):
                    done.set()
                    return

    watcher = asyncio.create_task(watch())
    await asyncio.sleep(0.1)
    for name in names:
        created[name] = time.perf_counter()
        await client.create(PODS, _pod(name, node), "default")
    try:
        await asyncio.wait_for(done.wait(), 120)
    finally:
        watcher.cancel()
    return running


async def _delete_pods(client: KubeClient, names: list[str]) -> None:
    assert PODS is not None
    await asyncio.gather(
        *(client.delete(PODS, n, "default", grace_period_seconds=1) for n in names)
    )
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        items, _ = await client.list(PODS, "default")
        if not any(i["metadata"]["name"] in names for i in items):
            return
        await asyncio.sleep(0.5)


async def _measure(bench: Bench, idle_seconds: float, start_pods: int) -> dict[str, Any]:
    assert bench.agent is not None
    pid = bench.agent.pid
    client = KubeClient.from_kubeconfig(bench.kubeconfig)
    try:
        await _wait_node_ready(client, bench.node, 60)
        await asyncio.sleep(5)
        cpu0 = _cpu_seconds(pid)
        await asyncio.sleep(idle_seconds)
        idle_cpu = (_cpu_seconds(pid) - cpu0) / idle_seconds * 100
        idle_rss = _status(pid)["VmRSS"]

        twenty = [f"steady-{i:02}" for i in range(20)]
        await _start_pods(client, bench.node, twenty)
        await asyncio.sleep(5)
        cpu0 = _cpu_seconds(pid)
        await asyncio.sleep(idle_seconds)
        busy_cpu = (_cpu_seconds(pid) - cpu0) / idle_seconds * 100
        rss_20 = _status(pid)["VmRSS"]
        await _delete_pods(client, twenty)

        # One pod at a time: the latency a user sees for a pod, not the engine's queue.
        latencies: list[float] = []
        started: list[str] = []
        for number in range(start_pods):
            name = f"start-{number:03}"
            latencies.extend((await _start_pods(client, bench.node, [name])).values())
            started.append(name)
        await _delete_pods(client, started)
        peak = _status(pid)["VmHWM"]
        if not latencies:
            latencies = [float("nan")]
    finally:
        await client.close()
    summary = {
        "agent_rss_idle_mb": round(idle_rss / 1024, 1),
        "agent_rss_20_pods_mb": round(rss_20 / 1024, 1),
        "agent_rss_peak_mb": round(peak / 1024, 1),
        "agent_cpu_idle_percent": round(idle_cpu, 2),
        "agent_cpu_idle_20_pods_percent": round(busy_cpu, 2),
        "pod_start_p50_s": round(_percentile(latencies, 0.5), 3),
        "pod_start_p99_s": round(_percentile(latencies, 0.99), 3),
    }
    return {
        "summary": summary,
        "budget": {
            "agent_rss_idle_mb": {"budget": 45, "met": summary["agent_rss_idle_mb"] <= 45},
            "pod_start_p99_s": {"budget": 1.0, "met": summary["pod_start_p99_s"] <= 1.0},
        },
        "pod_start_pods": len(latencies),
        "pod_start_max_s": round(max(latencies), 3),
    }


def run_on_docker(
    name: str,
    make_bench: Callable[[Path], Bench],
    measure: Callable[[Bench], Coroutine[Any, Any, dict[str, Any]]],
) -> dict[str, Any]:
    """Start ``make_bench``'s server and agent in a fresh directory, ``measure``, stop them.

    Skipped without a Docker engine; the directory (the processes' logs) stays when it fails.
    """
    if shutil.which("docker") is None:
        return {"skipped": "no docker command"}
    from tests.agent.images import docker_available, ensure_test_image

    if not docker_available():
        return {"skipped": "no Docker engine answers (make docker-engine starts one)"}
    ensure_test_image(IMAGE)
    root = Path(tempfile.mkdtemp(prefix=f"k3py-{name}-bench-"))
    bench = make_bench(root)
    try:
        bench.start()
        result = asyncio.run(measure(bench))
    except Exception as err:
        raise RuntimeError(f"{name} benchmark failed; logs in {root}") from err
    finally:
        bench.stop()
    shutil.rmtree(root, ignore_errors=True)
    return {"benchmark": name, "cpus": os.cpu_count(), **result}


def run(
    *, quick: bool = False, idle_seconds: float | None = None, start_pods: int | None = None
) -> dict[str, Any]:
    idle = idle_seconds if idle_seconds is not None else (5.0 if quick else 20.0)
    pods = start_pods if start_pods is not None else (20 if quick else 100)
    return run_on_docker("agent", Bench, lambda bench: _measure(bench, idle, pods))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short phases (a smoke run)")
    parser.add_argument("--idle-seconds", type=float, default=None)
    parser.add_argument("--pods", type=int, default=None, help="pods for the start latency")
    args = parser.parse_args()
    result = run(quick=args.quick, idle_seconds=args.idle_seconds, start_pods=args.pods)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
