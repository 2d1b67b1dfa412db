"""An in-cluster client on the real Docker engine: a pod uses its mounted ServiceAccount token.

The pod runs in the host's network namespace (no pod network here), so it reaches the API at
the node's address rather than the ``kubernetes`` Service address. Its client is the host's
Python (``/usr`` mounted read-only into the busybox test image): it reads the token and
``namespace``, verifies the server with the mounted ``ca.crt``, lists the pods of its namespace
(which a Role grants its account) and is refused another namespace's.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.agent.cluster import Server, remove_node_containers, unique, wait_until
from tests.agent.images import TEST_IMAGE, docker_tier, ensure_test_image

pytestmark = [*docker_tier(), pytest.mark.integration]

NS = "incluster"
SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"


CLIENT = """
import json, os, ssl, sys, urllib.error, urllib.request
d = "/var/run/secrets/kubernetes.io/serviceaccount"
token = open(d + "/token").read()
ns = open(d + "/namespace").read()
context = ssl.create_default_context(cafile=d + "/ca.crt")  # verifies the server with ca.crt
host = os.environ.get("KUBERNETES_SERVICE_HOST", "")
print("HOST=" + host, flush=True)
# The API's address: given, or the kubernetes Service's (what in-cluster clients use).
base = sys.argv[1] if len(sys.argv) > 1 else f"https://{host}:{os.environ['KUBERNETES_SERVICE_PORT']}"
for namespace in (ns, "default"):
    request = urllib.request.Request(
        f"{base}/api/v1/namespaces/{namespace}/pods",
        headers={"Authorization": "Bearer " + token},
    )
    try:
        with urllib.request.urlopen(request, context=context) as answer:
            body = json.load(answer)
            names = [p["metadata"]["name"] for p in body["items"]]
            print(namespace, answer.status, body["kind"], names)
    except urllib.error.HTTPError as err:
        print(namespace, err.code, json.load(err)["reason"])
"""
# The host's Python, mounted read-only into the busybox image, is the in-cluster client.
HOST_MOUNTS = ("/usr", "/lib", "/lib64")


def client_pod(namespace: str, host_network: bool, *api: str) -> dict[str, Any]:
    """The client pod, named ``client``: it runs CLIENT with the API address ``api`` (none:
    the kubernetes Service's), prints DONE and sleeps."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "client", "namespace": namespace},
        "spec": {
            "hostNetwork": host_network,
            "terminationGracePeriodSeconds": 1,
            "volumes": [
                {"name": f"host{i}", "hostPath": {"path": path}}
                for i, path in enumerate(HOST_MOUNTS)
            ],
            "containers": [
                {
                    "name": "c",
                    "image": TEST_IMAGE,
                    "command": [
                        "/bin/sh",  # busybox's: /usr/bin/sh is now the host's
                        "-c",
                        '/usr/bin/python3 -c "$0" "$@" 2>&1; echo DONE; sleep 3600',
                        CLIENT,
                        *api,
                    ],
                    "volumeMounts": [
                        {"name": f"host{i}", "mountPath": path, "readOnly": True}
                        for i, path in enumerate(HOST_MOUNTS)
                    ],
                }
            ],
        },
    }


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    ensure_test_image()
    node = unique("incluster")
    server = Server(
        tmp_path_factory.mktemp("incluster"), "--flannel-backend", "none", embedded_agent=node
    )
    try:
        server.start()
        wait_until(lambda: server.node_ready(node), 60, "the node Ready")
        yield server
    finally:
        server.stop()
        remove_node_containers(node)


def test_pod_lists_its_namespace_with_its_token(server: Server) -> None:
    server.kubectl("create", "namespace", NS)
    server.kubectl("create", "role", "pods", "-n", NS, "--verb=list", "--resource=pods")
    server.kubectl(
        "create", "rolebinding", "pods", "-n", NS, "--role=pods", f"--serviceaccount={NS}:default"
    )
    pod = client_pod(NS, True, f"https://127.0.0.1:{server.port}")
    server.kubectl("apply", "-f", "-", stdin=json.dumps(pod))

    def logs() -> str:
        result = server.kubectl("logs", "client", "-n", NS, check=False)
        return result.stdout if "DONE" in result.stdout else ""

    try:
        wait_until(lambda: bool(logs()), 60, "the client pod's output")
    except AssertionError:
        described = server.kubectl("describe", "pod", "client", "-n", NS, check=False).stdout
        raise AssertionError(f"{described}\n{server.log()[-3000:]}") from None
    out = logs()
    assert f"{NS} 200 PodList ['client']" in out, out
    assert "default 403 Forbidden" in out, out
    assert "HOST=" in out
