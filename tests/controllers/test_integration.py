"""The scheduler and controllers inside the real ``k3py server``, driven with the real kubectl.

Nodes are hollow (see :mod:`tests.controllers.hollow`): registered, renewing their Leases and
running pods through the API from this process. Short node-monitor intervals come from the
server's flags.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from k3py.cluster.client import Informer, KubeClient
from k3py.cluster.server.controllers.base import (
    DEPLOYMENTS,
    ENDPOINTS,
    JOBS,
    NODES,
    PODS,
    REPLICASETS,
    SERVICES,
)
from tests.controllers.hollow import EXIT_CODE, HollowNodes
from tests.controllers.serverproc import ServerProcess

pytestmark = pytest.mark.integration

Object = dict[str, Any]
GRACE = 4.0


@dataclass
class Env:
    server: ServerProcess
    client: KubeClient
    nodes: HollowNodes
    watchers: list[Availability] = field(default_factory=list)

    async def availability(self) -> Availability:
        """Start watching the ``app=web`` pods' availability (stopped with the test)."""
        watcher = Availability(self.client)
        self.watchers.append(watcher)
        await watcher.start()
        return watcher


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    server = ServerProcess(
        tmp_path,
        "--disable-agent",  # hollow nodes only
        "--node-monitor-grace-period",
        str(GRACE),
        "--node-monitor-period",
        "0.5",
    )
    await server.start()
    client = KubeClient.from_kubeconfig(server.kubeconfig)
    nodes = HollowNodes(client, renew_interval=0.5)
    await nodes.start()
    made = Env(server, client, nodes)
    try:
        yield made
    finally:
        for watcher in made.watchers:
            await watcher.informer.stop()
        await nodes.stop()
        await client.close()
        await server.stop()


def deployment_yaml(image: str, replicas: int, surge: int = 1, unavailable: int = 1) -> str:
    return f"""
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web, namespace: default}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: web}}}}
  strategy:
    type: RollingUpdate
    rollingUpdate: {{maxSurge: {surge}, maxUnavailable: {unavailable}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      containers: [{{name: web, image: "{image}", ports: [{{name: http, containerPort: 8080}}]}}]
"""


SERVICE_YAML = """
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  type: NodePort
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: http}]
"""


async def until(what: str, check: Callable[[], Any], seconds: float = 60.0) -> Any:
    """Poll ``check`` (sync or async) until it returns something truthy."""
    deadline = time.monotonic() + seconds
    while True:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.2)


def is_available(pod: Object) -> bool:
    return not pod["metadata"].get("deletionTimestamp") and any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in (pod.get("status") or {}).get("conditions") or []
    )


class Availability:
    """Watches the ``app=web`` pods and remembers the fewest available at any observed state."""

    def __init__(self, client: KubeClient) -> None:
        self.informer = Informer(client, PODS, "default", label_selector="app=web")
        self.lowest: int | None = None
        self.states = 0
        self.informer.add_handler(self._see, lambda _o, _n: self._see(None), self._see)

    def _see(self, _pod: Object | None) -> None:
        if not self.informer.synced.is_set():
            return
        self.states += 1
        now = sum(1 for p in self.informer.list() if is_available(p))
        self.lowest = now if self.lowest is None else min(self.lowest, now)

    async def start(self) -> None:
        self.informer.start()
        await self.informer.synced.wait()
        self._see(None)

    def reset(self) -> None:
        self.lowest = None
        self.states = 0
        self._see(None)


async def web_images(client: KubeClient) -> list[str]:
    pods, _ = await client.list(PODS, "default", label_selector="app=web")
    return sorted(
        p["spec"]["containers"][0]["image"]
        for p in pods
        if not p["metadata"].get("deletionTimestamp")
    )


async def test_deployment_spreads_rolls_out_undoes_scales_and_is_collected(env: Env) -> None:
    server, client = env.server, env.client
    await env.nodes.add(["node-1", "node-2", "node-3"])
    await server.kubectl("apply", "-f", "-", stdin=deployment_yaml("nginx:1", 3))
    await server.kubectl("apply", "-f", "-", stdin=SERVICE_YAML)
    done = await server.kubectl("rollout", "status", "deployment/web", "--timeout=60s")
    assert 'deployment "web" successfully rolled out' in done.stdout

    wide = await server.kubectl("get", "pods", "-l", "app=web", "-o", "wide")
    print(wide.stdout)
    header, *rows = wide.stdout.splitlines()
    node_column = header.split().index("NODE")
    assert sorted(row.split()[node_column] for row in rows) == ["node-1", "node-2", "node-3"]

    # Services: the API server's own first address, a NodePort, and ready pod endpoints.
    kubernetes = await client.get(SERVICES, "kubernetes", "default")
    assert kubernetes["spec"]["clusterIP"] == "10.43.0.1"
    web = await client.get(SERVICES, "web", "default")
    assert 30000 <= web["spec"]["ports"][0]["nodePort"] <= 32767
    endpoints = await until(
        "three endpoints",
        lambda: _endpoint_ips(client),
    )
    pods, _ = await client.list(PODS, "default", label_selector="app=web")
    assert sorted(endpoints) == sorted(p["status"]["podIP"] for p in pods)

    watcher = await env.availability()
    await server.kubectl("set", "image", "deployment/web", "web=nginx:2")
    done = await server.kubectl("rollout", "status", "deployment/web", "--timeout=90s")
    assert 'deployment "web" successfully rolled out' in done.stdout
    assert await web_images(client) == ["nginx:2"] * 3
    assert watcher.states > 5
    assert watcher.lowest == 2  # replicas 3, maxUnavailable 1: never fewer, and it was used

    watcher.reset()
    await server.kubectl("rollout", "undo", "deployment/web")
    await server.kubectl("rollout", "status", "deployment/web", "--timeout=90s")
    assert await web_images(client) == ["nginx:1"] * 3
    assert watcher.lowest is not None
    assert watcher.lowest >= 2
    history = await server.kubectl("rollout", "history", "deployment/web")
    revisions = [line.split()[0] for line in history.stdout.splitlines()[2:] if line.strip()]
    assert revisions == ["2", "3"]

    await server.kubectl("scale", "deployment/web", "--replicas=5")
    await server.kubectl("rollout", "status", "deployment/web", "--timeout=60s")
    pods, _ = await client.list(PODS, "default", label_selector="app=web")
    assert sum(1 for p in pods if is_available(p)) == 5

    await server.kubectl("delete", "deployment", "web")

    async def collected() -> bool:
        sets, _ = await client.list(REPLICASETS, "default")
        pods, _ = await client.list(PODS, "default", label_selector="app=web")
        return not sets and not pods

    await until("ReplicaSets and pods to be collected", collected, 60)


async def _endpoint_ips(client: KubeClient) -> list[str]:
    try:
        ep = await client.get(ENDPOINTS, "web", "default")
    except Exception:
        return []
    ips = [a["ip"] for s in ep.get("subsets") or [] for a in s.get("addresses") or []]
    return ips if len(ips) == 3 else []


async def test_cordon_and_drain_move_pods_off_a_node(env: Env) -> None:
    server, client = env.server, env.client
    await env.nodes.add(["node-1", "node-2"])
    await server.kubectl("apply", "-f", "-", stdin=deployment_yaml("nginx:1", 4))
    await server.kubectl("rollout", "status", "deployment/web", "--timeout=60s")
    await server.kubectl("cordon", "node-1")
    node = await client.get(NODES, "node-1")
    assert node["spec"]["unschedulable"] is True
    drained = await server.kubectl(
        "drain", "node-1", "--ignore-daemonsets", "--delete-emptydir-data", "--timeout=60s"
    )
    assert "node/node-1 drained" in drained.stdout

    async def moved() -> bool:
        pods, _ = await client.list(PODS, "default", label_selector="app=web")
        live = [p for p in pods if is_available(p)]
        return len(live) == 4 and all(p["spec"]["nodeName"] == "node-2" for p in live)

    await until("all pods on node-2", moved)
    await server.kubectl("uncordon", "node-1")
    assert "unschedulable" not in (await client.get(NODES, "node-1"))["spec"]


async def test_a_daemonset_gains_a_pod_when_a_node_joins(env: Env) -> None:
    server, client = env.server, env.client
    await env.nodes.add(["node-1", "node-2"])
    manifest = """
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: agent, namespace: kube-system}
spec:
  selector: {matchLabels: {app: agent}}
  template:
    metadata: {labels: {app: agent}}
    spec:
      containers: [{name: agent, image: "agent:1"}]
"""
    await server.kubectl("apply", "-f", "-", stdin=manifest)
    await server.kubectl(
        "rollout", "status", "daemonset/agent", "-n", "kube-system", "--timeout=60s"
    )
    await env.nodes.add(["node-3"])

    async def on_every_node() -> bool:
        pods, _ = await client.list(PODS, "kube-system", label_selector="app=agent")
        return sorted(p["spec"].get("nodeName") or "" for p in pods if is_available(p)) == [
            "node-1",
            "node-2",
            "node-3",
        ]

    await until("a daemon pod on node-3", on_every_node)
    await server.kubectl(
        "rollout", "status", "daemonset/agent", "-n", "kube-system", "--timeout=60s"
    )


def job_yaml(name: str, exit_code: int, **spec: int) -> str:
    fields = "".join(f"\n  {key}: {value}" for key, value in spec.items())
    return f"""
apiVersion: batch/v1
kind: Job
metadata: {{name: {name}, namespace: default}}
spec:{fields}
  template:
    metadata: {{annotations: {{"{EXIT_CODE}": "{exit_code}"}}}}
    spec:
      restartPolicy: Never
      containers: [{{name: task, image: "busybox:1"}}]
"""


async def test_a_job_completes_and_another_stops_at_its_backoff_limit(env: Env) -> None:
    server, client = env.server, env.client
    await env.nodes.add(["node-1"])
    await server.kubectl("apply", "-f", "-", stdin=job_yaml("ok", 0, completions=3, parallelism=2))
    await server.kubectl("apply", "-f", "-", stdin=job_yaml("bad", 1, backoffLimit=1))
    await server.kubectl("wait", "--for=condition=complete", "job/ok", "--timeout=60s")
    ok = await client.get(JOBS, "ok", "default")
    assert ok["status"]["succeeded"] == 3
    await server.kubectl("wait", "--for=condition=failed", "job/bad", "--timeout=60s")
    bad = await client.get(JOBS, "bad", "default")
    failed = next(c for c in bad["status"]["conditions"] if c["type"] == "Failed")
    assert failed["reason"] == "BackoffLimitExceeded"
    pods, _ = await client.list(PODS, "default", label_selector="job-name=bad")
    assert len(pods) == 2  # the first try and one retry: backoffLimit 1


async def test_a_silent_node_goes_not_ready_is_tainted_and_its_pods_are_evicted(env: Env) -> None:
    server, client = env.server, env.client
    await env.nodes.add(["node-1", "node-2"])
    manifest = deployment_yaml("nginx:1", 2).replace(
        "      containers:",
        "      tolerations: [{key: node.kubernetes.io/unreachable, operator: Exists,"
        " effect: NoExecute, tolerationSeconds: 5}]\n      containers:",
    )
    await server.kubectl("apply", "-f", "-", stdin=manifest)
    await server.kubectl("rollout", "status", "deployment/web", "--timeout=60s")
    pods, _ = await client.list(PODS, "default", label_selector="app=web")
    victim = next(p for p in pods if p["spec"]["nodeName"] == "node-1")

    silenced = time.monotonic()
    env.nodes.silence("node-1")

    async def ready_of(name: str) -> str:
        node = await client.get(NODES, name)
        return str(next(c["status"] for c in node["status"]["conditions"] if c["type"] == "Ready"))

    await until("node-1 NotReady", lambda: _is(ready_of("node-1"), "Unknown"), 30)
    not_ready_after = time.monotonic() - silenced
    assert GRACE - 0.5 <= not_ready_after <= GRACE + 5
    listing = await server.kubectl("get", "nodes")
    assert any(line.split()[:2] == ["node-1", "NotReady"] for line in listing.stdout.splitlines())
    node = await client.get(NODES, "node-1")
    taints = sorted((t["key"], t["effect"]) for t in node["spec"]["taints"])
    assert taints == [
        ("node.kubernetes.io/unreachable", "NoExecute"),
        ("node.kubernetes.io/unreachable", "NoSchedule"),
    ]
    assert await ready_of("node-2") == "True"

    async def evicted() -> bool:
        pod = await client.get(PODS, victim["metadata"]["name"], "default")
        return bool(pod["metadata"].get("deletionTimestamp"))

    await until("the pod on node-1 to be evicted", evicted, 30)
    # The taint lands no earlier than GRACE after the node's last renewal (up to a heartbeat
    # before the silence), and taint times are whole seconds: allow 2 s for both. The pod's 5 s
    # toleration must still run out before it is evicted.
    assert time.monotonic() - silenced >= GRACE + 5.0 - 2.0

    async def replaced() -> bool:
        pods, _ = await client.list(PODS, "default", label_selector="app=web")
        live = [p for p in pods if is_available(p)]
        return len(live) == 2 and all(p["spec"]["nodeName"] == "node-2" for p in live)

    await until("a replacement on node-2", replaced)

    await env.nodes.revive("node-1")
    await until("node-1 Ready again", lambda: _is(ready_of("node-1"), "True"), 30)

    async def untainted() -> bool:
        return not (await client.get(NODES, "node-1"))["spec"].get("taints")

    await until("node-1 untainted", untainted, 30)


async def _is(value: Any, wanted: str) -> bool:
    return bool(await value == wanted)


async def test_a_server_restarted_mid_rollout_finishes_it(env: Env) -> None:
    server, client = env.server, env.client
    env.nodes.start_delay = 0.3  # slow pods: the rollout takes a while
    await env.nodes.add(["node-1", "node-2", "node-3"])
    await server.kubectl("apply", "-f", "-", stdin=deployment_yaml("nginx:1", 6))
    await server.kubectl("rollout", "status", "deployment/web", "--timeout=60s")
    first = await client.get(SERVICES, "kubernetes", "default")
    watcher = await env.availability()
    await server.kubectl("set", "image", "deployment/web", "web=nginx:2")

    async def halfway() -> bool:
        images = await web_images(client)
        return "nginx:2" in images and "nginx:1" in images

    await until("the rollout to be under way", halfway, 30)
    await server.restart(kill=True)
    done = await server.kubectl("rollout", "status", "deployment/web", "--timeout=30s", check=False)
    if done.returncode:
        dump = await server.kubectl("get", "pods,rs", "-o", "yaml")
        Path("/tmp/restart-dump.yaml").write_text(dump.stdout + server.log.read_text())
    assert done.returncode == 0
    assert 'deployment "web" successfully rolled out' in done.stdout
    assert await web_images(client) == ["nginx:2"] * 6
    assert watcher.lowest is not None
    assert watcher.lowest >= 5
    sets, _ = await client.list(REPLICASETS, "default")
    assert sorted(rs["spec"]["replicas"] for rs in sets) == [0, 6]
    deployment = await client.get(DEPLOYMENTS, "web", "default")
    assert deployment["status"]["observedGeneration"] == deployment["metadata"]["generation"]
    # Addresses allocated before the restart are not handed out again after it.
    await server.kubectl("apply", "-f", "-", stdin=SERVICE_YAML)
    again = await client.get(SERVICES, "kubernetes", "default")
    web = await client.get(SERVICES, "web", "default")
    assert again["spec"]["clusterIP"] == first["spec"]["clusterIP"] == "10.43.0.1"
    assert web["spec"]["clusterIP"] != "10.43.0.1"
