"""Edge autonomy on the real Docker engine: the server goes away, the agent restarts without it,
pods keep running and restart policies still apply; when the server returns, the agent
reconciles without restarting a healthy container.

The server stays down for ``K3PY_AUTONOMY_SECONDS`` (default 50 s: longer than the node
monitor's 40 s grace period, so the server has a NotReady node to recover).
"""

from __future__ import annotations

import json
import os
import time
from functools import partial
from pathlib import Path

import pytest

from tests.agent.cluster import (
    Agent,
    Server,
    docker,
    node_containers,
    remove_node_containers,
    unique,
    wait_until,
)
from tests.agent.images import TEST_IMAGE, docker_tier, ensure_test_image

pytestmark = [
    *docker_tier(),
    pytest.mark.integration,
    pytest.mark.timeout(600),
]

OFFLINE_SECONDS = float(os.environ.get("K3PY_AUTONOMY_SECONDS", "50"))


def _pod(name: str, node: str, command: list[str]) -> str:
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {
                "nodeName": node,
                "terminationGracePeriodSeconds": 1,
                "volumes": [{"name": "conf", "configMap": {"name": "greeting"}}],
                "containers": [
                    {
                        "name": "main",
                        "image": TEST_IMAGE,
                        "command": command,
                        "volumeMounts": [{"name": "conf", "mountPath": "/etc/greeting"}],
                    }
                ],
            },
        }
    )


def _identity(containers: dict[str, dict[str, object]]) -> dict[str, tuple[object, object]]:
    return {name: (c["Id"], c["State"]["StartedAt"]) for name, c in containers.items()}  # type: ignore[index]


def test_pods_survive_an_absent_server_and_an_offline_agent_restart(tmp_path: Path) -> None:
    ensure_test_image()
    node = unique("edge")
    server = Server(tmp_path)
    agent = Agent(tmp_path, node, server)
    try:
        server.start()
        agent.start()
        wait_until(lambda: server.node_ready(node), 60, "the edge node Ready")
        config_map = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "greeting", "namespace": "default"},
            "data": {"text": "hello"},
        }
        server.kubectl("apply", "-f", "-", stdin=json.dumps(config_map))
        server.kubectl("apply", "-f", "-", stdin=_pod("steady", node, ["sleep", "3600"]))
        server.kubectl("apply", "-f", "-", stdin=_pod("worker", node, ["sleep", "3600"]))
        for name in ("steady", "worker"):
            wait_until(partial(server.pod_running, name), 30, f"{name} Running")
        before = _identity(node_containers(node))
        assert len(before) == 2

        server.stop()
        time.sleep(OFFLINE_SECONDS / 2)
        # A container that dies while the server is away is restarted by the agent alone.
        worker = next(c for n, c in node_containers(node).items() if "_worker_" in n)
        docker("kill", str(worker["Id"]))
        wait_until(
            lambda: any(
                "_worker_" in n and c["Id"] != worker["Id"]
                for n, c in node_containers(node).items()
            ),
            30,
            "the agent to restart the killed container while offline",
        )
        # The agent restarts with neither server nor token: its pods come from the local store.
        agent.stop()
        agent.start(token=None)
        time.sleep(OFFLINE_SECONDS / 2)
        assert agent.process is not None
        assert agent.process.poll() is None, agent.log()
        offline = _identity(node_containers(node))
        steady = {n: v for n, v in offline.items() if "_steady_" in n}
        assert steady == {n: v for n, v in before.items() if "_steady_" in n}

        server.start()

        def reconciled() -> bool:
            # The restart made while offline reaches the server once the agent is back.
            pod = server.pod("worker") or {}
            statuses = (pod.get("status") or {}).get("containerStatuses") or [{}]
            return statuses[0].get("restartCount") == 1 and statuses[0].get("ready") is True

        # The agent's informers retry with back-off (up to 30 s) while the server is away.
        wait_until(reconciled, 90, "the agent to report the offline restart")
        wait_until(lambda: server.node_ready(node), 30, "the node Ready again")
        wait_until(partial(server.pod_running, "steady"), 30, "steady Running again")
        time.sleep(3)  # a few reconcile passes
        after = _identity(node_containers(node))
        assert after == offline, "a healthy container was restarted after the server came back"
        steady_pod = server.pod("steady")
        assert steady_pod is not None
        assert steady_pod["status"]["containerStatuses"][0]["restartCount"] == 0
        assert "pods from the local store" in agent.log()
    finally:
        agent.stop()
        server.stop()
        remove_node_containers(node)
