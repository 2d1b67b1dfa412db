"""A two-node cluster on the real Docker engine: ``k3py server`` (with its own agent) and a
second ``k3py agent``, driven with the real kubectl."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.agent.cluster import (
    Agent,
    Server,
    node_containers,
    remove_node_containers,
    unique,
    wait_until,
)
from tests.agent.images import TEST_IMAGE, docker_tier, ensure_test_image
from tests.server.process import KUBECTL

pytestmark = [
    *docker_tier(),
    pytest.mark.integration,
]


class Cluster:
    def __init__(self, server: Server, agent: Agent, nodes: tuple[str, str]) -> None:
        self.server = server
        self.agent = agent
        self.nodes = nodes

    def apply(self, manifest: dict[str, Any]) -> None:
        self.server.kubectl("apply", "-f", "-", stdin=json.dumps(manifest))

    def pod_manifest(
        self, name: str, node: str, container: dict[str, Any], **spec: Any
    ) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"nodeName": node, "containers": [{"image": TEST_IMAGE, **container}], **spec},
        }


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    ensure_test_image()
    root = tmp_path_factory.mktemp("cluster")
    own, other = unique("server-node"), unique("agent-node")
    server = Server(root, embedded_agent=own)
    agent = Agent(root, other, server)
    try:
        server.start()
        agent.start()
        wait_until(
            lambda: server.node_ready(own) and server.node_ready(other), 60, "both nodes Ready"
        )
        yield Cluster(server, agent, (own, other))
    finally:
        agent.stop()
        server.stop()
        for node in (own, other):
            remove_node_containers(node)


def test_both_nodes_are_ready_with_real_capacity_and_versions(cluster: Cluster) -> None:
    nodes = {n["metadata"]["name"]: n for n in cluster.server.kubectl_json("get", "nodes")["items"]}
    own, other = cluster.nodes
    assert {own, other} <= set(nodes)
    for name in (own, other):
        node = nodes[name]
        status = node["status"]
        assert status["capacity"]["cpu"] == str(len(os.sched_getaffinity(0)))
        assert status["capacity"]["memory"].endswith("Ki")
        assert status["capacity"]["pods"] == "110"
        info = status["nodeInfo"]
        assert info["containerRuntimeVersion"].startswith("docker://")
        assert info["kubeletVersion"].startswith("v1.32.0+k3py")
        assert node["metadata"]["labels"]["kubernetes.io/arch"] in {"amd64", "arm64", "arm"}
        types = {c["type"]: c["status"] for c in status["conditions"]}
        assert types == {
            "MemoryPressure": "False",
            "DiskPressure": "False",
            "PIDPressure": "False",
            "Ready": "True",
        }
        lease = cluster.server.kubectl_json("get", "lease", name, "-n", "kube-node-lease")
        assert lease["spec"]["holderIdentity"] == name
    # The server labels its own node (a node may not give itself role labels).
    wait_until(
        lambda: "node-role.kubernetes.io/control-plane"
        in cluster.server.kubectl_json("get", "node", own)["metadata"]["labels"],
        10,
        "the control-plane role label on the server's node",
    )
    wide = cluster.server.kubectl("get", "nodes", "-o", "wide").stdout
    assert "docker://" in wide


def test_deployment_runs_across_both_nodes_with_logs_and_exec(cluster: Cluster) -> None:
    server = cluster.server
    cluster.apply(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "httpd", "namespace": "default"},
            "spec": {
                "replicas": 4,
                "selector": {"matchLabels": {"app": "httpd"}},
                "template": {
                    "metadata": {"labels": {"app": "httpd"}},
                    "spec": {
                        "terminationGracePeriodSeconds": 2,
                        "containers": [
                            {
                                "name": "httpd",
                                "image": TEST_IMAGE,
                                "command": [
                                    "sh",
                                    "-c",
                                    "echo serving; exec httpd -f -p 8080 -h /www",
                                ],
                                "readinessProbe": {
                                    "httpGet": {"path": "/", "port": 8080},
                                    "periodSeconds": 1,
                                },
                            }
                        ],
                    },
                },
            },
        }
    )

    def running_pods() -> list[dict[str, Any]] | None:
        pods = server.kubectl_json("get", "pods", "-l", "app=httpd")["items"]
        ready = [
            p
            for p in pods
            if p["status"].get("phase") == "Running"
            and all(s["ready"] for s in p["status"].get("containerStatuses") or [{"ready": False}])
        ]
        return ready if len(ready) == 4 else None

    pods = wait_until(running_pods, 60, "4 Running httpd replicas")
    assert {p["spec"]["nodeName"] for p in pods} == set(cluster.nodes)
    for node in cluster.nodes:
        pod = next(p for p in pods if p["spec"]["nodeName"] == node)
        name = pod["metadata"]["name"]
        assert server.kubectl("exec", name, "--", "cat", "/etc/hostname").stdout.strip() == name
        assert "serving" in server.kubectl("logs", name).stdout
        assert pod["status"]["podIP"]
    server.kubectl("delete", "deployment", "httpd", "--wait=false")


def test_logs_follow_streams(cluster: Cluster) -> None:
    server = cluster.server
    cluster.apply(
        cluster.pod_manifest(
            "ticker",
            cluster.nodes[1],
            {
                "name": "tick",
                "command": [
                    "sh",
                    "-c",
                    "i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.2; done",
                ],
            },
            terminationGracePeriodSeconds=1,
        )
    )
    wait_until(lambda: server.pod_running("ticker"), 30, "ticker Running")
    env = {**os.environ, "KUBECONFIG": str(server.kubeconfig), "HOME": str(server.root)}
    with subprocess.Popen(
        [KUBECTL, "logs", "-f", "--tail=1", "--timestamps", "ticker"],
        stdout=subprocess.PIPE,
        env=env,
        text=True,
    ) as follower:
        assert follower.stdout is not None
        lines = [follower.stdout.readline() for _ in range(6)]
        follower.kill()
    numbers = [int(line.split()[-1]) for line in lines]
    assert numbers == list(range(numbers[0], numbers[0] + 6))  # new lines arrive as written
    assert all(line[:4].isdigit() and "T" in line.split()[0] for line in lines)
    previous = server.kubectl("logs", "ticker", "--previous", check=False)
    assert previous.returncode != 0
    assert "previous terminated container" in previous.stderr
    server.kubectl("delete", "pod", "ticker", "--wait=false")


def test_exec_exit_codes_and_stdin(cluster: Cluster) -> None:
    server = cluster.server
    cluster.apply(
        cluster.pod_manifest(
            "shell",
            cluster.nodes[0],
            {"name": "sh", "command": ["sleep", "3600"]},
            terminationGracePeriodSeconds=1,
        )
    )
    wait_until(lambda: server.pod_running("shell"), 30, "shell Running")
    assert server.kubectl("exec", "shell", "--", "cat", "/etc/hostname").stdout.strip() == "shell"
    failed = server.kubectl(
        "exec", "shell", "--", "sh", "-c", "echo out; echo err >&2; exit 7", check=False
    )
    assert failed.returncode == 7
    assert failed.stdout == "out\n"
    assert "err" in failed.stderr
    piped = server.kubectl("exec", "-i", "shell", "--", "sh", stdin="echo $((6 * 7))\n")
    assert piped.stdout.strip() == "42"
    server.kubectl("delete", "pod", "shell", "--wait=false")


def test_exited_container_restarts_with_backoff(cluster: Cluster) -> None:
    server = cluster.server
    cluster.apply(
        cluster.pod_manifest(
            "crasher",
            cluster.nodes[1],
            {"name": "crash", "command": ["sh", "-c", "echo bye; exit 3"]},
            terminationGracePeriodSeconds=1,
        )
    )

    def crash_looping() -> dict[str, Any] | None:
        pod = server.pod("crasher")
        statuses = ((pod or {}).get("status") or {}).get("containerStatuses") or []
        if not statuses:
            return None
        status = statuses[0]
        waiting = status["state"].get("waiting") or {}
        return (
            status
            if status["restartCount"] >= 1 and waiting.get("reason") == "CrashLoopBackOff"
            else None
        )

    status = wait_until(crash_looping, 40, "CrashLoopBackOff after a restart")
    assert status["lastState"]["terminated"]["exitCode"] == 3
    assert "back-off 10s" in status["state"]["waiting"]["message"]
    assert server.kubectl("logs", "crasher", "--previous").stdout.strip() == "bye"
    events = server.kubectl(
        "get", "events", "--field-selector", "involvedObject.name=crasher", "-o", "json"
    )
    assert "BackOff" in {e["reason"] for e in json.loads(events.stdout)["items"]}
    server.kubectl("delete", "pod", "crasher", "--wait=false")


def test_failing_liveness_probe_restarts_the_container(cluster: Cluster) -> None:
    server = cluster.server
    container = {
        "name": "app",
        "command": ["sh", "-c", "touch /tmp/alive; sleep 3600"],
        "livenessProbe": {
            "exec": {"command": ["cat", "/tmp/alive"]},
            "periodSeconds": 1,
            "failureThreshold": 2,
        },
    }
    cluster.apply(
        cluster.pod_manifest(
            "liveness", cluster.nodes[0], container, terminationGracePeriodSeconds=1
        )
    )
    first = wait_until(lambda: server.pod_running("liveness"), 30, "liveness pod Running")
    first_id = first["status"]["containerStatuses"][0]["containerID"]
    server.kubectl("exec", "liveness", "--", "rm", "/tmp/alive")

    def restarted() -> dict[str, Any] | None:
        pod = server.pod("liveness")
        status = ((pod or {}).get("status") or {}).get("containerStatuses") or [{}]
        return (
            status[0]
            if status[0].get("restartCount", 0) >= 1 and status[0].get("containerID") != first_id
            else None
        )

    status = wait_until(restarted, 30, "a restart after the liveness probe failed")
    assert status["lastState"]["terminated"]["containerID"] == first_id
    events = json.loads(
        server.kubectl(
            "get", "events", "--field-selector", "involvedObject.name=liveness", "-o", "json"
        ).stdout
    )
    assert any(
        e["reason"] == "Unhealthy" and "Liveness probe failed" in e["message"]
        for e in events["items"]
    )
    server.kubectl("delete", "pod", "liveness", "--wait=false")


def test_config_map_volume_follows_updates(cluster: Cluster) -> None:
    server = cluster.server
    cluster.apply(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "settings", "namespace": "default"},
            "data": {"mode": "fast"},
        }
    )
    container = {
        "name": "app",
        "command": ["sleep", "3600"],
        "volumeMounts": [{"name": "conf", "mountPath": "/etc/app"}],
        "env": [
            {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "mode"}}}
        ],
    }
    cluster.apply(
        cluster.pod_manifest(
            "configured",
            cluster.nodes[1],
            container,
            terminationGracePeriodSeconds=1,
            volumes=[{"name": "conf", "configMap": {"name": "settings"}}],
        )
    )
    wait_until(lambda: server.pod_running("configured"), 30, "configured pod Running")
    assert server.kubectl("exec", "configured", "--", "cat", "/etc/app/mode").stdout == "fast"
    assert (
        server.kubectl("exec", "configured", "--", "sh", "-c", "echo $MODE").stdout.strip()
        == "fast"
    )
    server.kubectl(
        "patch", "configmap", "settings", "--type=merge", "-p", '{"data": {"mode": "slow"}}'
    )
    wait_until(
        lambda: server.kubectl("exec", "configured", "--", "cat", "/etc/app/mode").stdout == "slow",
        20,
        "the mounted ConfigMap to show the update",
        interval=0.5,
    )
    server.kubectl("delete", "pod", "configured", "--wait=false")


@pytest.mark.parametrize(
    ("name", "command", "grace"),
    [
        ("polite", ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 0.2; done"], 10),
        ("stubborn", ["sleep", "3600"], 3),
    ],
)
def test_deleted_pod_loses_its_containers_within_the_grace_period(
    cluster: Cluster, name: str, command: list[str], grace: int
) -> None:
    server = cluster.server
    node = cluster.nodes[1]
    cluster.apply(
        cluster.pod_manifest(
            name, node, {"name": "main", "command": command}, terminationGracePeriodSeconds=grace
        )
    )
    pod = wait_until(lambda: server.pod_running(name), 30, f"{name} Running")
    uid = pod["metadata"]["uid"]

    def containers() -> list[str]:
        return [
            n
            for n, c in node_containers(node, running=False).items()
            if c["Config"]["Labels"].get("io.kubernetes.pod.uid") == uid
        ]

    assert containers()
    started = time.monotonic()
    server.kubectl("delete", "pod", name, "--wait=false")
    wait_until(
        lambda: not containers() and server.pod(name) is None,
        grace + 10,
        f"{name}'s containers and object to go",
    )
    took = time.monotonic() - started
    assert took < grace + 5
    if name == "polite":
        assert took < 5  # SIGTERM ended it; nobody waited for the grace period


def test_a_node_credential_cannot_modify_another_node(cluster: Cluster) -> None:
    import http.client

    own, other = cluster.nodes
    context = cluster.agent.ssl_context()  # the credential of `other`
    connection = http.client.HTTPSConnection("127.0.0.1", cluster.server.port, context=context)
    body = json.dumps({"metadata": {"labels": {"stolen": "yes"}}})
    headers = {"Content-Type": "application/merge-patch+json"}
    try:
        connection.request("PATCH", f"/api/v1/nodes/{own}", body=body, headers=headers)
        refused = connection.getresponse()
        refused_body = json.loads(refused.read())
        connection.request("PATCH", f"/api/v1/nodes/{other}", body=body, headers=headers)
        allowed = connection.getresponse()
        allowed.read()
    finally:
        connection.close()
    assert refused.status == 403
    assert refused_body["kind"] == "Status"
    assert allowed.status == 200


def _agent_children(server: Server) -> list[int]:
    assert server.process is not None
    # Every thread's children: the server starts its agent again from a watching thread.
    tasks = Path(f"/proc/{server.process.pid}/task")
    children = [c for t in tasks.iterdir() for c in (t / "children").read_text().split()]
    return [
        int(child)
        for child in children
        if b"agent" in Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
    ]


def test_the_servers_own_agent_is_started_again_when_it_dies(cluster: Cluster) -> None:
    server, (own, _) = cluster.server, cluster.nodes
    [first] = _agent_children(server)
    lease = server.kubectl_json("get", "lease", own, "-n", "kube-node-lease")
    os.kill(first, signal.SIGKILL)
    wait_until(
        lambda: [p for p in _agent_children(server) if p != first] != [],
        30,
        "a new agent process under the server",
    )
    assert "this node's agent exited; starting it again" in server.log()
    # The new agent renews the node's Lease: the node stays Ready.
    wait_until(
        lambda: server.kubectl_json("get", "lease", own, "-n", "kube-node-lease")["spec"][
            "renewTime"
        ]
        != lease["spec"]["renewTime"],
        30,
        "the restarted agent renewing the node's lease",
    )
    assert server.node_ready(own)
