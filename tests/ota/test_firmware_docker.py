"""A firmware update on a real Docker agent: its pod's container is never restarted.

A server and one agent on the Docker runtime, started by the firmware launcher from a firmware
directory holding this tree's wheel as 0.1.0, run a pod. A bundle of the same code as 0.2.0 is
pushed and an UpdatePlan applied with kubectl: the agent downloads, verifies and installs it,
restarts into it through the launcher and reports Healthy; the node then reports the new
version. The pod's container keeps its ID, its start time and its restart count throughout.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from k3py.cli import main
from k3py.cluster.ota.firmware import Firmware
from k3py.image import firmware as wheels
from k3py.image.ota import bundler
from tests.agent.cluster import Server, node_containers, remove_node_containers, unique, wait_until
from tests.agent.images import TEST_IMAGE, docker_tier, ensure_test_image
from tests.ota.test_rollout_processes import CACHE, relabel
from tests.processes import stop_process

pytestmark = [*docker_tier(), pytest.mark.integration, pytest.mark.timeout(300)]

PLAN = """\
apiVersion: ota.k3py.io/v1
kind: UpdatePlan
metadata: {name: fw-docker}
spec:
  version: 0.2.0
  nodeSelector: {kubernetes.io/hostname: NODE}
  maxUnavailable: 1
"""


class Rig:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.node = unique("ota-docker")
        self.server = Server(root)
        self.firmware = Firmware(root / "firmware")
        self.launcher: subprocess.Popen[bytes] | None = None

    def start(self, wheel: Path) -> None:
        self.server.start()
        self.firmware.install(relabel(wheel, "0.1.0", self.root), "0.1.0")
        argv = [sys.executable, "-m", "k3py.cluster.ota.launcher", "agent",
                "--flannel-backend", "none", "--server", self.server.https_url,
                "--token", self.server.token, "--data-dir", str(self.root / "agent"),
                "--node-name", self.node]  # fmt: skip
        env = {**os.environ, "K3PY_FIRMWARE_DIR": str(self.firmware.root),
               "K3PY_OTA_KEY": str(self.root / "k.pub")}  # fmt: skip
        with (self.root / "agent.log").open("ab") as log:
            self.launcher = subprocess.Popen(argv, env=env, cwd=self.root, stdout=log,
                                             stderr=subprocess.STDOUT)  # fmt: skip

    def stop(self) -> None:
        stop_process(self.launcher)  # the agent stops; its containers would keep running
        remove_node_containers(self.node)
        self.server.stop()


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    ensure_test_image()
    bundler.keygen(tmp_path / "k.pem", tmp_path / "k.pub")
    rig = Rig(tmp_path)
    try:
        yield rig
    finally:
        rig.stop()


def _container(rig: Rig) -> tuple[str, str, int]:
    (found,) = node_containers(rig.node).values()
    return found["Id"], found["State"]["StartedAt"], int(found["RestartCount"])


def _plan_phase(rig: Rig) -> Any:
    got = rig.server.kubectl("get", "updateplan", "fw-docker", "-o", "json", check=False)
    return json.loads(got.stdout).get("status", {}).get("phase") if got.returncode == 0 else None


def test_a_firmware_update_keeps_the_pods_container(rig: Rig) -> None:
    wheel = wheels.firmware_wheel(None, CACHE).path
    rig.start(wheel)
    server = rig.server
    wait_until(lambda: server.node_ready(rig.node), 90, "the node Ready")
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "keep", "namespace": "default"},
           "spec": {"nodeName": rig.node, "terminationGracePeriodSeconds": 1,
                    "containers": [{"name": "main", "image": TEST_IMAGE,
                                    "command": ["sleep", "3600"]}]}}  # fmt: skip
    server.kubectl("apply", "-f", "-", stdin=json.dumps(pod))
    wait_until(lambda: server.pod_running("keep"), 60, "the pod Running")
    before = _container(rig)
    restarts = server.kubectl_json("get", "pod", "keep")["status"]["containerStatuses"][0]
    assert rig.firmware.trial() is None  # 0.1.0 reported READY=1 to the launcher

    key = bundler.load_private_key(rig.root / "k.pem")
    bundle = rig.root / "firmware-0.2.0.k3pyb"
    bundler.firmware_bundle(bundle, key, relabel(wheel, "0.2.0", rig.root), boards=[],
                            minimum_version=None)  # fmt: skip
    assert main(["ota", "push", str(bundle), "--kubeconfig", str(server.kubeconfig)]) == 0
    started = time.monotonic()
    server.kubectl("apply", "-f", "-", stdin=PLAN.replace("NODE", rig.node))
    wait_until(lambda: _plan_phase(rig) in ("Complete", "Halted"), 120, "the plan's end")
    took = time.monotonic() - started
    plan = server.kubectl_json("get", "updateplan", "fw-docker")
    assert plan["status"]["phase"] == "Complete", plan["status"]
    assert plan["status"]["nodes"][0]["phase"] == "Healthy"
    assert rig.firmware.version_of(rig.firmware.current) == "0.2.0"
    node = server.kubectl_json("get", "node", rig.node)
    assert node["status"]["nodeInfo"]["kubeletVersion"].endswith("+k3py-0.2.0")
    # The same container, never restarted, and the pod's view agrees.
    assert _container(rig) == before
    after = server.kubectl_json("get", "pod", "keep")["status"]["containerStatuses"][0]
    assert after["restartCount"] == restarts["restartCount"]
    assert after["containerID"] == restarts["containerID"]
    assert server.pod_running("keep") is not None
    print(f"firmware update of a Docker agent through an UpdatePlan: {took:.1f} s")
