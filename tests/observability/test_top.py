"""``kubectl top`` and the agents' metrics on a two-node cluster on the real Docker engine.

A server (no agent of its own) and two ``k3py agent`` processes in the machine's namespace
(``--flannel-backend none``: nothing is routed), sampling usage every second. A busy pod (a
shell spinning, with memory held) and an idle one (``sleep``) must show as such in ``kubectl
top pods --containers``; both nodes appear in ``kubectl top nodes``; each agent's Prometheus
text is reachable through ``/api/v1/nodes/NAME/proxy/metrics`` for the admin only.
"""

from __future__ import annotations

import http.client
import json
import re
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.agent.cluster import Agent, Server, remove_node_containers, unique, wait_until
from tests.agent.images import TEST_IMAGE, docker_tier, ensure_test_image
from tests.processes import free_port

pytestmark = [*docker_tier(), pytest.mark.integration]

# Holds about 16 MB in a shell variable, then spins.
BUSY = 'x=$(head -c 16000000 /dev/zero | tr "\\0" a); while :; do :; done'


class SamplingAgent(Agent):
    """An agent that samples usage every second and serves /healthz on its own port."""

    def __init__(self, root: Path, node: str, server: Server) -> None:
        super().__init__(root, node, server)
        self.healthz_port = free_port()

    def argv(self, *, token: str | None) -> list[str]:
        extra = ["--flannel-backend", "none", "--usage-interval", "1"]
        extra += ["--healthz-port", str(self.healthz_port)]
        return [*super().argv(token=token), *extra]


class Cluster:
    def __init__(self, server: Server, agents: tuple[SamplingAgent, SamplingAgent]) -> None:
        self.server = server
        self.agents = agents

    def raw(self, path: str) -> Any:
        return json.loads(self.server.kubectl("get", "--raw", path).stdout)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    ensure_test_image()
    root = tmp_path_factory.mktemp("top")
    server = Server(root)
    agents = (
        SamplingAgent(root, unique("top-a"), server),
        SamplingAgent(root, unique("top-b"), server),
    )
    try:
        server.start()
        for agent in agents:
            agent.start()
        wait_until(lambda: all(server.node_ready(a.node) for a in agents), 60, "both nodes Ready")
        busy, idle = agents
        for name, agent, command in (("busy", busy, BUSY), ("idle", idle, "sleep 3600")):
            pod = {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": name, "namespace": "default", "labels": {"top": name}},
                "spec": {
                    "nodeName": agent.node,
                    "terminationGracePeriodSeconds": 0,
                    "containers": [
                        {"name": "main", "image": TEST_IMAGE, "command": ["sh", "-c", command]}
                    ],
                },
            }
            server.kubectl("apply", "-f", "-", stdin=json.dumps(pod))
        wait_until(
            lambda: server.pod_running("busy") and server.pod_running("idle"), 60, "pods running"
        )
        yield Cluster(server, agents)
    finally:
        for agent in agents:
            agent.stop()
        server.stop()
        for agent in agents:
            remove_node_containers(agent.node)


def _cores(text: str) -> float:
    return int(text[:-1]) / 1000 if text.endswith("m") else float(text)


def _mebibytes(text: str) -> float:
    return float(text[:-2]) if text.endswith("Mi") else float(text) / (1 << 20)


def _table(output: str) -> list[list[str]]:
    return [re.split(r"\s{2,}|\s+", line.strip()) for line in output.strip().splitlines()[1:]]


def test_kubectl_top_nodes_shows_both_nodes(cluster: Cluster) -> None:
    names = {a.node for a in cluster.agents}

    def top() -> dict[str, list[str]] | None:
        result = cluster.server.kubectl("top", "nodes", check=False)
        rows = {row[0]: row for row in _table(result.stdout)} if result.returncode == 0 else {}
        # kubectl lists a node whose first usage sample has not arrived yet as <unknown>.
        measured = names <= set(rows) and all("<unknown>" not in rows[n] for n in names)
        return rows if measured else None

    rows = wait_until(top, 60, "kubectl top nodes listing both nodes with their usage")
    for name in names:
        _, cpu, cpu_percent, memory, memory_percent = rows[name]
        assert _cores(cpu) > 0
        assert _mebibytes(memory) > 0
        assert cpu_percent.endswith("%")
        assert memory_percent.endswith("%")


def test_kubectl_top_pods_tells_busy_from_idle(cluster: Cluster) -> None:
    def usage() -> dict[str, tuple[float, float]] | None:
        result = cluster.server.kubectl("top", "pods", "--containers", check=False)
        if result.returncode != 0:
            return None
        rows = {row[0]: row for row in _table(result.stdout)}
        if {"busy", "idle"} - set(rows):
            return None
        found = {pod: (_cores(row[2]), _mebibytes(row[3])) for pod, row in rows.items()}
        # A container's first sample averages since its start (the shell's start-up included);
        # from the second on it is the rate over the last interval.
        return found if found["busy"][0] >= 0.2 and found["idle"][0] <= 0.01 else None

    found = wait_until(usage, 40, "kubectl top pods: the busy pod busy, the idle one idle")
    busy_cpu, busy_memory = found["busy"]
    idle_cpu, idle_memory = found["idle"]
    assert busy_cpu >= 0.2
    assert busy_memory >= 10
    assert idle_cpu <= 0.01
    assert idle_memory <= 2
    listed = cluster.raw(
        "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods?labelSelector=top%3Dbusy"
    )
    assert [item["metadata"]["name"] for item in listed["items"]] == ["busy"]
    assert listed["items"][0]["containers"][0]["name"] == "main"
    result = cluster.server.kubectl("top", "pods", "-l", "top=idle", check=False)
    assert result.returncode == 0, result.stderr
    assert [row[0] for row in _table(result.stdout)] == ["idle"]


def _families(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    found: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return found


def test_agent_metrics_through_the_node_proxy(cluster: Cluster) -> None:
    busy = cluster.agents[0]
    text = cluster.server.kubectl("get", "--raw", f"/api/v1/nodes/{busy.node}/proxy/metrics").stdout
    samples = _families(text)
    started = {
        labels["container_type"]: v for labels, v in samples["kubelet_started_containers_total"]
    }
    assert started["container"] >= 1
    assert started["podsandbox"] >= 1
    assert ({"phase": "Running"}, 1.0) in samples["k3py_agent_pods"]
    assert samples["k3py_agent_tunnel_connected"] == [({}, 1.0)]
    assert samples["kubelet_pod_start_duration_seconds_count"][0][1] >= 1
    assert any(
        labels["operation_type"] == "container_stats"
        for labels, _ in samples["kubelet_runtime_operations_duration_seconds_count"]
    )
    assert samples["node_memory_MemAvailable_bytes"][0][1] > 0


def _status(server: Server, path: str, context: Any) -> int:
    conn = http.client.HTTPSConnection("127.0.0.1", server.port, context=context, timeout=30)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def test_metrics_refuse_anonymous_and_node_credentials(cluster: Cluster) -> None:
    server, agent = cluster.server, cluster.agents[0]
    anonymous = server.ssl_context(client_cert=False)
    node = agent.ssl_context()
    for path in (
        "/metrics",
        f"/api/v1/nodes/{agent.node}/proxy/metrics",
        "/apis/metrics.k8s.io/v1beta1/nodes",
    ):
        assert _status(server, path, anonymous) == 401, path
        assert _status(server, path, node) == 403, path
        assert _status(server, path, server.ssl_context()) == 200, path


def test_server_metrics_and_health_on_the_real_server(cluster: Cluster) -> None:
    samples = _families(cluster.server.kubectl("get", "--raw", "/metrics").stdout)
    assert samples["leader_election_master_status"] == [({"name": "k3py-controller-manager"}, 1.0)]
    queues = {labels["name"] for labels, _ in samples["workqueue_depth"]}
    assert {"deployment", "scheduler"} <= queues
    assert samples["k3py_agent_tunnels"] == [({}, 2.0)]
    assert samples["apiserver_storage_size_bytes"][0][1] > 0
    verbose = cluster.server.kubectl("get", "--raw", "/readyz?verbose").stdout
    assert "[+]poststarthook/start-controllers ok" in verbose
    assert "[+]informer-sync ok" in verbose
    assert verbose.strip().endswith("readyz check passed")


def test_node_events_and_agent_healthz(cluster: Cluster) -> None:
    agent = cluster.agents[1]
    selector = f"involvedObject.kind=Node,involvedObject.name={agent.node}"

    def reasons() -> set[str] | None:
        events = cluster.server.kubectl_json("get", "events", "--field-selector", selector)
        found = {e["reason"] for e in events["items"]}
        return found if {"Starting", "NodeReady"} <= found else None

    found = wait_until(reasons, 20, "the node's Starting and NodeReady events")
    assert "NodeHasSufficientMemory" in found
    url = f"http://127.0.0.1:{agent.healthz_port}/healthz"
    with urllib.request.urlopen(url, timeout=10) as answer:
        assert answer.read() == b"ok"
