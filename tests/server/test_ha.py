"""Three ``k3py server`` processes on one PostgreSQL database and two Docker agents.

What a user of an HA cluster relies on: every server shows the same objects and serves the
same kubeconfig; a watch on one server sees writes made on another; ``kill -9`` of the leader
while 16 clients write loses no acknowledged write, another server takes over the controllers
and a Deployment scaled just before still converges; the agents move to a live server, stay
Ready and restart no container; a server with a wrong token is refused and changes nothing;
and while PostgreSQL restarts the servers answer 503 with Retry-After, then recover.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import http.client
import json
import threading
import time
from collections.abc import AsyncGenerator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pytest

from k3py.cluster.api.resources import by_kind
from k3py.cluster.client import KubeClient
from tests.agent.cluster import (
    Agent,
    Server,
    node_containers,
    remove_node_containers,
    unique,
    wait_until,
)
from tests.agent.images import TEST_IMAGE, docker_tier, ensure_test_image
from tests.store.pg_instance import PostgresInstance, postgres_bin

pytestmark = [
    *docker_tier(),
    pytest.mark.integration,
    pytest.mark.skipif(postgres_bin() is None, reason="needs Debian's postgresql"),
    # These tests run 16 writer threads; a thread's exit runs the garbage collector, which may
    # then finalise a socket leaked by any earlier test in the session, and pytest blames the
    # test that happens to run. The servers under test are separate processes, unaffected.
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
]

TOKEN = "ha-cluster-secret-7f3a"
CONFIGMAPS = "/api/v1/namespaces/default/configmaps"


@dataclass
class HaCluster:
    postgres: PostgresInstance
    endpoint: str
    root: Path
    servers: list[Server]
    agents: list[Agent]
    nodes: list[str] = field(default_factory=list)

    def live(self) -> list[Server]:
        return [s for s in self.servers if s.running]

    def leader_pid(self, via: Server) -> int | None:
        lease = via.kubectl_json("get", "lease", "k3py-control-plane", "-n", "kube-system")
        holder = str(lease["spec"].get("holderIdentity") or "")
        return int(holder.rsplit("_", 1)[1]) if "_" in holder else None


def _server(root: Path, name: str, endpoint: str, token: str) -> Server:
    directory = root / name
    directory.mkdir()
    return Server(directory, "--datastore-endpoint", endpoint, "--token", token)


@pytest.fixture(scope="module")
def ha(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HaCluster]:
    ensure_test_image()
    root = tmp_path_factory.mktemp("ha")
    postgres = PostgresInstance()
    cluster: HaCluster | None = None
    try:
        postgres.start()
        endpoint = postgres.new_database()
        servers = [_server(root, f"server{i}", endpoint, TOKEN) for i in range(3)]
        cluster = HaCluster(postgres, endpoint, root, servers, [])
        servers[0].start()
        # The first server leads (the agents are given its address, so its death moves both).
        wait_until(lambda: cluster.leader_pid(servers[0]), 30, "a control-plane leader")
        for server in servers[1:]:
            server.start()
        cluster.nodes = [unique("ha-node"), unique("ha-node")]
        cluster.agents = [Agent(root, node, servers[0]) for node in cluster.nodes]
        for agent in cluster.agents:
            agent.start()
        wait_until(
            lambda: all(servers[0].node_ready(node) for node in cluster.nodes), 60, "agents Ready"
        )
        yield cluster
    finally:
        if cluster is not None:
            for agent in cluster.agents:
                agent.stop()
            for server in cluster.servers:
                server.stop()
            for node in cluster.nodes:
                remove_node_containers(node)
        postgres.stop()


def _request(
    server: Server, method: str, path: str, body: Any = None
) -> tuple[int, dict[str, str]]:
    conn = server.connection(timeout=10)
    try:
        data = json.dumps(body).encode() if body is not None else None
        conn.request(method, path, body=data, headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}
    finally:
        conn.close()


def _configmap(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name},
        "data": {"k": name},
    }


class Writers:
    """Threads that create ConfigMaps until stopped, each trying the servers in turn."""

    def __init__(self, servers: list[Server], prefix: str, count: int) -> None:
        self.servers = servers
        self.prefix = prefix
        self.acknowledged: list[str] = []
        self.refused: list[int] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._write, args=(n,)) for n in range(count)]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> list[str]:
        self._stop.set()
        for thread in self._threads:
            thread.join()
        return self.acknowledged

    def _write(self, number: int) -> None:
        turn = number % len(self.servers)
        servers = self.servers[turn:] + self.servers[:turn]
        i = 0
        while not self._stop.is_set():
            name = f"{self.prefix}{number:02}-{i:05}"
            for server in servers:
                try:
                    status, _ = _request(server, "POST", CONFIGMAPS, _configmap(name))
                except (OSError, http.client.HTTPException):
                    continue  # that server is gone (perhaps mid-answer): the next one
                if status == 201:
                    with self._lock:
                        self.acknowledged.append(name)
                    break
                if status == 409:  # an earlier try was applied but its answer was lost
                    break
                with self._lock:
                    self.refused.append(status)
                time.sleep(0.05)
            i += 1


def test_every_server_serves_the_same_cluster(ha: HaCluster) -> None:
    first, second, third = ha.servers
    first.kubectl("create", "configmap", "shared-view", "--from-literal=a=1")
    views = [s.kubectl_json("get", "configmap", "shared-view")["metadata"] for s in ha.servers]
    assert len({(m["uid"], m["resourceVersion"]) for m in views}) == 1
    # One CA: the first server's kubeconfig works against every server.
    for other in (second, third):
        result = first.kubectl("--server", other.https_url, "get", "configmap", "shared-view")
        assert "shared-view" in result.stdout
    endpoints = wait_until(
        lambda: _endpoint_ports(first) == {s.port for s in ha.servers} or None,
        15,
        "the kubernetes Endpoints to list three servers",
    )
    assert endpoints


def _endpoint_ports(server: Server) -> set[int]:
    endpoints = server.kubectl_json("get", "endpoints", "kubernetes")
    return {p["port"] for subset in endpoints.get("subsets") or [] for p in subset["ports"]}


def test_a_server_with_a_wrong_token_is_refused_and_changes_nothing(ha: HaCluster) -> None:
    before = ha.postgres.psql("SELECT value FROM k3py_log WHERE name = '/bootstrap/k3py'", _db(ha))
    intruder = _server(ha.root, "intruder", ha.endpoint, "not-the-cluster-token")
    with pytest.raises(RuntimeError, match="exited early"):
        intruder.start(timeout=60)
    errors = [line for line in intruder.log().splitlines() if line.startswith("k3py: error")]
    assert errors == [
        "k3py: error: --token does not match the cluster in this datastore; pass the token of"
        " the first server (k3py token on that server, or its <data-dir>/server/token)"
    ]
    assert not (intruder.data_dir / "server" / "tls").exists()
    after = ha.postgres.psql("SELECT value FROM k3py_log WHERE name = '/bootstrap/k3py'", _db(ha))
    assert after == before


def _db(ha: HaCluster) -> str:
    return ha.endpoint.rsplit("/", 1)[1].split("?")[0]


def test_a_watch_on_one_server_sees_writes_made_on_another(ha: HaCluster) -> None:
    writer_server, watcher_server = ha.servers[0], ha.servers[1]
    configmaps = by_kind("v1", "ConfigMap")
    assert configmaps is not None
    count = 50

    async def measure() -> list[float]:
        writer = KubeClient(writer_server.https_url, ssl_context=writer_server.ssl_context())
        watcher = KubeClient(watcher_server.https_url, ssl_context=watcher_server.ssl_context())
        sent: dict[str, float] = {}
        delays: list[float] = []
        try:
            _, version = await watcher.list(configmaps, "default")

            async def watch() -> None:
                events = cast(
                    AsyncGenerator[tuple[str, dict[str, Any]], None],
                    watcher.watch(configmaps, "default", resource_version=version),
                )
                async with contextlib.aclosing(events):  # its connection closes with it
                    async for kind, obj in events:
                        name = obj["metadata"]["name"]
                        if kind == "ADDED" and name in sent:
                            delays.append(time.perf_counter() - sent[name])
                            if len(delays) == count:
                                return

            task = asyncio.create_task(watch())
            await asyncio.sleep(0.2)
            for i in range(count):
                name = f"cross-{i}"
                sent[name] = time.perf_counter()
                await writer.create(configmaps, _configmap(name), "default")
                await asyncio.sleep(0.01)
            await asyncio.wait_for(task, 10)
        finally:
            await writer.close()
            await watcher.close()
            await asyncio.sleep(0.25)  # let the TLS connections finish closing (aiohttp)
        return delays

    delays = sorted(asyncio.run(measure()))
    assert len(delays) == count
    p99 = delays[int(0.99 * (count - 1))]
    print(
        f"\nwatch delivery across servers: p50 {delays[count // 2] * 1000:.1f} ms,"
        f" p99 {p99 * 1000:.1f} ms"
    )


def _deployment(replicas: int) -> dict[str, Any]:
    labels = {"app": "ha-web"}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "ha-web", "namespace": "default"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [
                        {"name": "web", "image": TEST_IMAGE, "command": ["sleep", "3600"]}
                    ],
                    "terminationGracePeriodSeconds": 1,
                },
            },
        },
    }


def _ready_pods(server: Server) -> list[dict[str, Any]]:
    pods = server.kubectl_json("get", "pods", "-l", "app=ha-web")["items"]
    return [
        p
        for p in pods
        if (p.get("status") or {}).get("phase") == "Running"
        and all(s.get("ready") for s in p["status"].get("containerStatuses") or [{}])
        and not p["metadata"].get("deletionTimestamp")
    ]


def _node_lease_time(server: Server, node: str) -> str:
    lease = server.kubectl_json("get", "lease", node, "-n", "kube-node-lease")
    return str(lease["spec"].get("renewTime", ""))


def test_kill_9_of_the_leader_during_writes_loses_nothing_and_moves_everything(
    ha: HaCluster,
) -> None:
    leader, survivor, _ = ha.servers
    survivor.kubectl("apply", "-f", "-", stdin=json.dumps(_deployment(2)))
    wait_until(lambda: len(_ready_pods(survivor)) == 2, 60, "two ready pods")
    containers = {node: set(node_containers(node)) for node in ha.nodes}
    assert leader.process is not None
    old_pid = leader.process.pid
    assert ha.leader_pid(survivor) == old_pid

    writers = Writers(ha.servers, "w", 16)
    writers.start()
    try:
        # Scaled just before the leader dies: the new leader must finish the job.
        survivor.kubectl("scale", "deployment", "ha-web", "--replicas", "4")
        time.sleep(1.0)
        killed_at = time.monotonic()
        leader.kill9()
        time.sleep(3.0)
    finally:
        acknowledged = writers.stop()
    names = {
        item["metadata"]["name"] for item in survivor.kubectl_json("get", "configmaps")["items"]
    }
    assert len(acknowledged) >= 16, "the writers should have got through"
    assert set(acknowledged) <= names, "an acknowledged write was lost"

    new_leader = wait_until(
        lambda: (pid := ha.leader_pid(survivor)) not in (None, old_pid) and pid,
        45,
        "another server to lead",
    )
    takeover = time.monotonic() - killed_at
    assert new_leader in {s.process.pid for s in ha.live() if s.process is not None}
    wait_until(lambda: len(_ready_pods(survivor)) == 4, 60, "the scaled Deployment to converge")
    print(f"\ncontrollers moved after {takeover:.1f} s; {len(acknowledged)} writes acknowledged")

    # The agents moved to a live server: their node leases are renewed after the kill.
    renewed = {node: _node_lease_time(survivor, node) for node in ha.nodes}
    wait_until(
        lambda: all(_node_lease_time(survivor, n) != renewed[n] for n in ha.nodes),
        30,
        "node leases renewed through another server",
    )
    for agent in ha.agents:
        assert "switched API server" in agent.log()
    for node in ha.nodes:
        assert survivor.node_ready(node)
        assert containers[node] <= set(node_containers(node)), "a container was restarted"
    for pod in survivor.kubectl_json("get", "pods", "-l", "app=ha-web")["items"]:
        for status in pod["status"].get("containerStatuses") or []:
            assert status.get("restartCount", 0) == 0
    # Every node keeps a tunnel to every live server: exec works through each of them.
    pod_name = _ready_pods(survivor)[0]["metadata"]["name"]
    started = time.monotonic()
    for server in ha.live():
        wait_until(
            functools.partial(_exec_says_hello, server, pod_name),
            20,
            f"exec through the server on port {server.port}",
        )
    print(f"exec through every live server after {time.monotonic() - started:.1f} s")
    print("agent RSS after failover: " + ", ".join(f"{a.rss_kb() // 1024} MB" for a in ha.agents))


def _exec_says_hello(server: Server, pod: str) -> bool:
    return "hello" in server.kubectl("exec", pod, "--", "echo", "hello", check=False).stdout


def test_restarting_postgres_under_load_answers_503_then_recovers(ha: HaCluster) -> None:
    live = ha.live()
    server = live[0]
    writers = Writers(live, "pg", 4)
    writers.start()
    try:
        time.sleep(0.5)
        ha.postgres.pg_ctl("stop")
        try:
            status, headers = _request(server, "POST", CONFIGMAPS, _configmap("while-away"))
            assert status == 503
            assert headers.get("retry-after") == "1"
        finally:
            ha.postgres.pg_ctl("start")

        def written() -> bool:
            code, _ = _request(server, "POST", CONFIGMAPS, _configmap(unique("after-restart")))
            return code == 201

        wait_until(written, 30, "writes to succeed again")
        time.sleep(0.5)
    finally:
        acknowledged = writers.stop()
    assert 503 in writers.refused
    assert acknowledged
    for other in live:
        names = {i["metadata"]["name"] for i in other.kubectl_json("get", "configmaps")["items"]}
        assert set(acknowledged) <= names, "an acknowledged write was lost"
