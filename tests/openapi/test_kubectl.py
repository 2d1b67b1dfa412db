"""Real kubectl (1.32) against the OpenAPI routes: explain, and apply's validation and patches.

The server is the OpenAPI routes plus a discovery and object-store stub (:mod:`.stub`) on a
random loopback port, plain HTTP, no authentication.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import web

from tests.openapi.stub import STATE, StubState, make_app

pytestmark = pytest.mark.integration

KUBECTL = "/usr/bin/kubectl"

MANIFEST = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: default}
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: nginx:1.25
        ports: [{containerPort: 80}]
        env: [{name: MODE, value: blue}]
      - name: sidecar
        image: busybox:1.36
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 80}]
---
apiVersion: v1
kind: ConfigMap
metadata: {name: settings, namespace: default}
data: {mode: blue}
"""

# One object of each other served kind, with the field types the Python client flattens
# (IntOrString, Quantity, MicroTime, bytes) and lists merged by key.
OTHER_KINDS = """\
apiVersion: v1
kind: Namespace
metadata: {name: demo, labels: {team: a}}
---
apiVersion: v1
kind: Secret
metadata: {name: token, namespace: default}
data: {key: dmFsdWU=}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: robot, namespace: default}
secrets: [{name: token}]
---
apiVersion: v1
kind: Pod
metadata:
  name: probe
  namespace: default
  ownerReferences: [{apiVersion: v1, kind: Node, name: node1, uid: u1}]
spec:
  containers:
  - name: main
    image: busybox:1.36
    resources: {limits: {cpu: 100m, memory: 64Mi}}
    readinessProbe: {httpGet: {port: http, path: /}}
    volumeMounts: [{name: scratch, mountPath: /scratch}]
  volumes: [{name: scratch, emptyDir: {sizeLimit: 1Gi}}]
  tolerations: [{key: k, operator: Exists}]
---
apiVersion: batch/v1
kind: Job
metadata: {name: once, namespace: default}
spec:
  template:
    spec:
      restartPolicy: Never
      containers: [{name: main, image: busybox:1.36}]
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: agent, namespace: default}
spec:
  selector: {matchLabels: {app: agent}}
  updateStrategy: {rollingUpdate: {maxUnavailable: 1}}
  template:
    metadata: {labels: {app: agent}}
    spec: {containers: [{name: main, image: busybox:1.36}]}
---
apiVersion: coordination.k8s.io/v1
kind: Lease
metadata: {name: leader, namespace: default}
spec: {holderIdentity: a, renewTime: "2024-01-01T00:00:00.000000Z"}
---
apiVersion: v1
kind: Endpoints
metadata: {name: web, namespace: default}
subsets: [{addresses: [{ip: 192.0.2.1}], ports: [{port: 80}]}]
"""


@dataclass(frozen=True)
class Kubectl:
    server: str
    home: Path
    state: StubState

    async def run(self, *args: str) -> tuple[int, str, str]:
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.home),
            "KUBECONFIG": str(self.home / "no-kubeconfig"),
        }
        process = await asyncio.create_subprocess_exec(
            KUBECTL,
            "--server",
            self.server,
            "--cache-dir",
            str(self.home / "cache"),
            *args,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
        assert process.returncode is not None
        return process.returncode, stdout.decode(), stderr.decode()


@pytest.fixture
async def kubectl(tmp_path: Path) -> AsyncIterator[Kubectl]:
    if not os.access(KUBECTL, os.X_OK):
        pytest.fail(f"{KUBECTL} is missing: `make setup` installs it")
    app = make_app()
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield Kubectl(f"http://{host}:{port}", tmp_path, app[STATE])
    finally:
        await runner.cleanup()


async def test_explain_prints_a_field_with_its_type_and_description(kubectl: Kubectl) -> None:
    code, out, err = await kubectl.run("explain", "deployment.spec.replicas")
    assert code == 0, err
    assert "KIND:       Deployment" in out
    assert "FIELD: replicas <integer>" in out
    assert "Number of desired pods." in out
    asked = {r.path for r in kubectl.state.requests}
    assert "/openapi/v3/apis/apps/v1" in asked


async def test_explain_a_kind_and_its_fields_recursively(kubectl: Kubectl) -> None:
    code, out, err = await kubectl.run("explain", "pods")
    assert code == 0, err
    assert "Pod is a collection of containers that can run on a host." in out
    assert "spec\t<PodSpec>" in out
    assert "Specification of the desired behavior of the pod." in out

    code, out, err = await kubectl.run("explain", "pods", "--recursive")
    assert code == 0, err
    assert "containers\t<[]Container> -required-" in out
    assert "containerPort\t<integer> -required-" in out
    assert "creationTimestamp\t<string>" in out

    code, out, err = await kubectl.run("explain", "svc.spec.ports.targetPort")
    assert code == 0, err
    assert "IntOrString" in out


async def test_apply_leaves_validation_to_the_server_and_patches_by_merge_key(
    kubectl: Kubectl, tmp_path: Path
) -> None:
    manifest = tmp_path / "app.yaml"
    manifest.write_text(MANIFEST)
    code, out, err = await kubectl.run("apply", "-f", str(manifest))
    assert code == 0, err
    assert err == ""
    assert "deployment.apps/web created" in out
    posts = [r for r in kubectl.state.requests if r.method == "POST"]
    assert len(posts) == 3
    assert all(r.query.get("fieldValidation") == "Strict" for r in posts)
    # Trusting the server means kubectl never needs the v2 document it would ask as protobuf.
    assert not [r for r in kubectl.state.requests if r.path == "/openapi/v2"]

    manifest.write_text(
        MANIFEST.replace("nginx:1.25", "nginx:1.27").replace(
            "env: [{name: MODE, value: blue}]", "env: [{name: MODE, value: green}]"
        )
    )
    code, out, err = await kubectl.run("apply", "-f", str(manifest))
    assert code == 0, err
    assert "warning" not in err.lower()  # a v3 patch failure is reported as a warning
    patches = [r for r in kubectl.state.requests if r.method == "PATCH"]
    assert len(patches) == 1
    patch = patches[0]
    assert patch.content_type == "application/strategic-merge-patch+json"
    assert patch.query.get("fieldValidation") == "Strict"
    spec = json.loads(patch.body)["spec"]["template"]["spec"]
    # Containers merge by name and env by name: only the changed container is sent.
    assert spec["$setElementOrder/containers"] == [{"name": "web"}, {"name": "sidecar"}]
    assert spec["containers"] == [
        {
            "name": "web",
            "image": "nginx:1.27",
            "$setElementOrder/env": [{"name": "MODE"}],
            "env": [{"name": "MODE", "value": "green"}],
        }
    ]


async def test_apply_computes_every_kinds_patch_from_v3(kubectl: Kubectl, tmp_path: Path) -> None:
    manifest = tmp_path / "kinds.yaml"
    manifest.write_text(OTHER_KINDS)
    code, _, err = await kubectl.run("apply", "-f", str(manifest))
    assert code == 0, err
    changed = (
        OTHER_KINDS.replace("busybox:1.36", "busybox:1.37")
        .replace("team: a", "team: b")
        .replace("dmFsdWU=", "dmFsdWY=")
        .replace("holderIdentity: a", "holderIdentity: b")
        .replace("192.0.2.1", "192.0.2.2")
        .replace("cpu: 100m", "cpu: 200m")
    )
    manifest.write_text(changed)
    code, _, err = await kubectl.run("apply", "-f", str(manifest))
    assert code == 0, err
    assert "warning" not in err.lower()
    patches = [r for r in kubectl.state.requests if r.method == "PATCH"]
    assert all(r.content_type == "application/strategic-merge-patch+json" for r in patches)
    assert len(patches) == 7  # every object but the unchanged ServiceAccount
    pod = next(json.loads(r.body) for r in patches if r.path.endswith("/pods/probe"))
    assert pod["spec"]["$setElementOrder/containers"] == [{"name": "main"}]


async def test_the_python_client_reads_both_documents(kubectl: Kubectl) -> None:
    from kubernetes import client  # the official client, a dev dependency

    configuration = client.Configuration(host=kubectl.server)

    def fetch(path: str) -> object:
        with client.ApiClient(configuration) as api:
            body, status, _ = api.call_api(path, "GET", response_type="object")
            assert status == 200
            return body

    # The client is synchronous: off the loop that serves the stub.
    v2 = await asyncio.to_thread(fetch, "/openapi/v2")
    assert isinstance(v2, dict)
    assert v2["swagger"] == "2.0"
    assert "io.k8s.api.apps.v1.Deployment" in v2["definitions"]
    index = await asyncio.to_thread(fetch, "/openapi/v3")
    assert isinstance(index, dict)
    url = index["paths"]["apis/coordination.k8s.io/v1"]["serverRelativeURL"]
    v3 = await asyncio.to_thread(fetch, url)
    assert isinstance(v3, dict)
    assert "io.k8s.api.coordination.v1.Lease" in v3["components"]["schemas"]
