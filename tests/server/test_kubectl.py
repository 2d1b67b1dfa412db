"""The real kubectl (1.32) against a real ``k3py server``: the issue's acceptance, step by step."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from tests.server.process import KUBECTL, ServerProcess

pytestmark = pytest.mark.integration

NS = "shop"
MANIFEST = """\
apiVersion: v1
kind: Namespace
metadata:
  name: shop
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: shop
  labels: {app: web}
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
        ports:
        - containerPort: 80
        env:
        - name: MODE
          value: prod
        resources:
          requests: {cpu: 250m, memory: 64Mi}
---
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: shop
spec:
  selector: {app: web}
  ports:
  - name: http
    port: 80
    targetPort: 80
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
  namespace: shop
data:
  color: blue
---
apiVersion: v1
kind: Secret
metadata:
  name: creds
  namespace: shop
type: Opaque
data:
  password: c2VjcmV0
"""


@pytest.fixture(scope="module")
def shop(cluster: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The manifest, applied once (the first `kubectl apply`)."""
    path = tmp_path_factory.mktemp("manifests") / "shop.yaml"
    path.write_text(MANIFEST)
    first = cluster.kubectl("apply", "-f", str(path))
    assert first.stdout.split("\n")[:5] == [
        "namespace/shop created",
        "deployment.apps/web created",
        "service/web created",
        "configmap/settings created",
        "secret/creds created",
    ]
    return path


def test_version_and_api_resources(cluster: ServerProcess) -> None:
    version = json.loads(cluster.kubectl("get", "--raw", "/version").stdout)
    assert version["gitVersion"].startswith("v1.32.")
    table = cluster.kubectl("api-resources").stdout.splitlines()
    assert table[0].split() == ["NAME", "SHORTNAMES", "APIVERSION", "NAMESPACED", "KIND"]
    # Keyed by name and API version: metrics.k8s.io serves "pods" and "nodes" too.
    rows = {(line.split()[0], line.split()[-3]): line.split() for line in table[1:]}
    assert rows["deployments", "apps/v1"] == [
        "deployments",
        "deploy",
        "apps/v1",
        "true",
        "Deployment",
    ]
    assert rows["pods", "v1"] == ["pods", "po", "v1", "true", "Pod"]
    assert rows["pods", "metrics.k8s.io/v1beta1"][-1] == "PodMetrics"
    assert rows["leases", "coordination.k8s.io/v1"] == [
        "leases",
        "coordination.k8s.io/v1",
        "true",
        "Lease",
    ]


def test_second_apply_changes_nothing(cluster: ServerProcess, shop: Path) -> None:
    second = cluster.kubectl("apply", "-f", str(shop))
    assert second.stdout.splitlines() == [
        "namespace/shop unchanged",
        "deployment.apps/web unchanged",
        "service/web unchanged",
        "configmap/settings unchanged",
        "secret/creds unchanged",
    ]


def _wide(cluster: ServerProcess) -> list[list[str]]:
    out = cluster.kubectl("get", "deploy,rs,pods,svc", "-n", NS, "-o", "wide").stdout
    return [block.splitlines() for block in out.strip().split("\n\n")]


def test_get_wide_has_kubernetes_columns(cluster: ServerProcess, shop: Path) -> None:
    # The deployment controller makes the ReplicaSet and its Pods; wait until they are listed.
    deadline = time.monotonic() + 30
    blocks = _wide(cluster)
    while len(blocks) < 4 or len(blocks[2]) < 3:
        assert time.monotonic() < deadline, f"no ReplicaSet and Pods: {blocks}"
        time.sleep(0.2)
        blocks = _wide(cluster)
    headers = [block[0].split() for block in blocks]
    assert headers == [
        ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE", "CONTAINERS", "IMAGES", "SELECTOR"],
        ["NAME", "DESIRED", "CURRENT", "READY", "AGE", "CONTAINERS", "IMAGES", "SELECTOR"],
        ["NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP", "NODE", "NOMINATED", "NODE",
         "READINESS", "GATES"],
        ["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE", "SELECTOR"],
    ]  # fmt: skip
    deployment = blocks[0][1].split()
    assert deployment[0] == "deployment.apps/web"
    assert deployment[1] == "0/2"  # no node runs them
    assert deployment[5:] == ["web", "nginx:1.25", "app=web"]
    replica_set = blocks[1][1].split()
    assert replica_set[0].startswith("replicaset.apps/web-")
    assert replica_set[1] == "2"
    assert replica_set[-3:-1] == ["web", "nginx:1.25"]
    pod = blocks[2][1].split()
    assert pod[0].startswith("pod/web-")
    assert pod[1:4] == ["0/1", "Pending", "0"]
    service = blocks[3][1].split()
    assert service[:2] == ["service/web", "ClusterIP"]
    assert service[2].startswith("10.43.")
    assert service[3:5] == ["<none>", "80/TCP"]
    assert service[-1] == "app=web"


def test_get_yaml_describe_and_explain(cluster: ServerProcess, shop: Path) -> None:
    obj = yaml.safe_load(cluster.kubectl("get", "deploy", "web", "-n", NS, "-o", "yaml").stdout)
    assert obj["kind"] == "Deployment"
    assert obj["metadata"]["uid"]
    assert obj["spec"]["strategy"]["type"] == "RollingUpdate"  # defaulted as Kubernetes does
    described = cluster.kubectl("describe", "deployment", "web", "-n", NS).stdout
    assert "Name:                   web" in described
    assert "Replicas:               2 desired" in described
    assert "StrategyType:           RollingUpdate" in described
    explained = cluster.kubectl("explain", "deployment.spec.replicas").stdout
    assert "FIELD: replicas <integer>" in explained
    assert "Number of desired pods" in explained


def test_label_annotate_scale_patch_and_replace(
    cluster: ServerProcess, shop: Path, tmp_path: Path
) -> None:
    cluster.kubectl("label", "deploy", "web", "-n", NS, "tier=front")
    cluster.kubectl("annotate", "deploy", "web", "-n", NS, "owner=team-a")
    scaled = cluster.kubectl("scale", "deploy", "web", "-n", NS, "--replicas=3")
    assert scaled.stdout.strip() == "deployment.apps/web scaled"
    patch = '{"spec":{"template":{"spec":{"containers":[{"name":"web","image":"nginx:1.26"}]}}}}'
    cluster.kubectl("patch", "deploy", "web", "-n", NS, "-p", patch)
    obj = json.loads(cluster.kubectl("get", "deploy", "web", "-n", NS, "-o", "json").stdout)
    assert obj["metadata"]["labels"] == {"app": "web", "tier": "front"}
    assert obj["metadata"]["annotations"]["owner"] == "team-a"
    assert obj["spec"]["replicas"] == 3
    (container,) = obj["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "nginx:1.26"
    assert container["env"] == [{"name": "MODE", "value": "prod"}]  # strategic: merged by name
    assert obj["metadata"]["generation"] == 3  # scale and image: two spec changes
    cm = json.loads(cluster.kubectl("get", "cm", "settings", "-n", NS, "-o", "json").stdout)
    cm["data"]["color"] = "green"
    del cm["metadata"]["resourceVersion"]
    path = tmp_path / "settings.json"
    path.write_text(json.dumps(cm))
    replaced = cluster.kubectl("replace", "-f", str(path))
    assert replaced.stdout.strip() == "configmap/settings replaced"
    color = cluster.kubectl(
        "get", "cm", "settings", "-n", NS, "-o", "jsonpath={.data.color}"
    ).stdout
    assert color == "green"


def test_get_watch_streams_a_change(cluster: ServerProcess, shop: Path) -> None:
    env = {
        "KUBECONFIG": str(cluster.kubeconfig),
        "KUBECACHEDIR": str(cluster.root / "kube-cache"),
        "HOME": str(cluster.root),
    }
    argv = [KUBECTL, "get", "cm", "-n", NS, "-w", "--output-watch-events", "--request-timeout=30s"]
    with subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, env=env) as watcher:
        try:
            assert watcher.stdout is not None
            header = watcher.stdout.readline().split()
            assert header[:3] == ["EVENT", "NAME", "DATA"]
            # The current state first: every namespace has the cluster CA's ConfigMap.
            seen = [watcher.stdout.readline().split()[:2] for _ in range(2)]
            assert sorted(seen) == [["ADDED", "kube-root-ca.crt"], ["ADDED", "settings"]]
            watched = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: watched}\ndata: {a: b}\n"
            cluster.kubectl("create", "-n", NS, "-f", "-", stdin=watched)
            line = watcher.stdout.readline().split()  # then the change, as it happens
            assert line[:3] == ["ADDED", "watched", "1"]
        finally:
            watcher.terminate()


def test_typed_create_commands(cluster: ServerProcess, shop: Path) -> None:
    # kubectl's typed commands send protobuf bodies and do not fall back to JSON.
    cluster.kubectl("create", "configmap", "typed", "-n", NS, "--from-literal=k=v")
    cluster.kubectl("create", "deployment", "typed", "-n", NS, "--image=busybox:1.36")
    cluster.kubectl("run", "one-off", "-n", NS, "--image=busybox:1.36", "--restart=Never")
    config = json.loads(cluster.kubectl("get", "cm", "typed", "-n", NS, "-o", "json").stdout)
    assert config["data"] == {"k": "v"}
    deployment = json.loads(
        cluster.kubectl("get", "deploy", "typed", "-n", NS, "-o", "json").stdout
    )
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == "busybox:1.36"
    pod = json.loads(cluster.kubectl("get", "pod", "one-off", "-n", NS, "-o", "json").stdout)
    assert pod["spec"]["restartPolicy"] == "Never"


def test_server_side_apply(cluster: ServerProcess, tmp_path: Path) -> None:
    path = tmp_path / "ssa.yaml"
    path.write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: ssa}\ndata: {a: '1'}\n")
    first = cluster.kubectl("apply", "--server-side", "-f", str(path))
    assert first.stdout.strip() == "configmap/ssa serverside-applied"
    before = cluster.kubectl("get", "cm", "ssa", "-o", "jsonpath={.metadata.resourceVersion}")
    cluster.kubectl("apply", "--server-side", "-f", str(path))
    after = cluster.kubectl("get", "cm", "ssa", "-o", "jsonpath={.metadata.resourceVersion}")
    assert before.stdout == after.stdout  # nothing changed, nothing written


def test_delete_namespace_removes_its_content(cluster: ServerProcess, shop: Path) -> None:
    deleted = cluster.kubectl("delete", "namespace", NS, "--timeout=60s")
    assert deleted.stdout.strip() == 'namespace "shop" deleted'
    missing = cluster.kubectl("get", "namespace", NS, check=False)
    assert missing.returncode != 0
    assert 'namespaces "shop" not found' in missing.stderr
    for path in ("/apis/apps/v1/deployments", "/apis/apps/v1/replicasets", "/api/v1/pods",
                 "/api/v1/services", "/api/v1/configmaps", "/api/v1/secrets"):  # fmt: skip
        code, listed = cluster.request("GET", f"{path}?fieldSelector=metadata.namespace%3D{NS}")
        assert code == 200
        assert listed["items"] == [], path
