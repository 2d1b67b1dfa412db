"""Reproductions run with the official client 37.x (pydantic models), in its own interpreter.

One venv holds one version of a distribution, so the dev extra keeps kubernetes 32.x and
``make venv`` installs 37.x into ``.venv/k8s37`` (``pip install --target``). The tests in
:mod:`tests.server.test_client37` run ``python -m tests.server.client37_checks KUBECONFIG
CHECK…`` with that directory first on ``PYTHONPATH``; each check raises on failure and the
process exits non-zero with the traceback. Nothing here imports k3py.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from kubernetes import client, config, watch
from kubernetes.stream import portforward, stream

NS = "client37"


def _workload(kind: str, name: str) -> dict[str, Any]:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": kind,
        "metadata": {"name": name},
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "c", "image": "k3py-test/busybox:1"}]},
            },
        }
        if kind == "ReplicaSet"
        else {
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                # Matches no node: the status stays as created.
                "spec": {
                    "nodeSelector": {"k3py.test/none": "none"},
                    "containers": [{"name": "c", "image": "k3py-test/busybox:1"}],
                },
            },
        },
    }


def _namespace(api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    try:
        core.create_namespace({"metadata": {"name": NS}})
    except client.ApiException as err:
        if err.status != 409:
            raise


def create_daemon_set(api: client.ApiClient) -> None:
    apps = client.AppsV1Api(api)
    created = apps.create_namespaced_daemon_set(NS, _workload("DaemonSet", "ds37"))
    assert created.status.number_ready == 0, created.status
    assert apps.read_namespaced_daemon_set("ds37", NS).metadata.name == "ds37"


def create_replica_set(api: client.ApiClient) -> None:
    apps = client.AppsV1Api(api)
    created = apps.create_namespaced_replica_set(NS, _workload("ReplicaSet", "rs37"))
    assert created.status.replicas == 0, created.status


def watch_daemon_sets(api: client.ApiClient) -> None:
    apps = client.AppsV1Api(api)
    rv = apps.list_namespaced_daemon_set(NS).metadata.resource_version
    seen: list[Any] = []
    watcher = watch.Watch()

    def run() -> None:
        for event in watcher.stream(
            apps.list_namespaced_daemon_set, NS, resource_version=rv, timeout_seconds=10
        ):
            seen.append(event)
            if event["object"].metadata.name == "watched37":
                watcher.stop()

    thread = threading.Thread(target=run)
    thread.start()
    time.sleep(0.3)
    apps.create_namespaced_daemon_set(NS, _workload("DaemonSet", "watched37"))
    thread.join(15)
    added = [e for e in seen if e["object"].metadata.name == "watched37"]
    assert added, seen
    assert added[0]["type"] == "ADDED", seen
    assert isinstance(added[0]["object"], client.V1DaemonSet)


def delete_service(api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    body = {"metadata": {"name": "svc37"}, "spec": {"ports": [{"port": 80}]}}
    core.create_namespaced_service(NS, body)
    deleted = core.delete_namespaced_service("svc37", NS)
    assert deleted.metadata.name == "svc37", deleted


def delete_service_account(api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    core.create_namespaced_service_account(NS, {"metadata": {"name": "sa37"}})
    deleted = core.delete_namespaced_service_account("sa37", NS)
    assert deleted.metadata.name == "sa37", deleted


def exec_text_stdin(api: client.ApiClient, pod: str = "shell", namespace: str = "default") -> None:
    """``write_stdin(str)`` sends text frames; the shell must see them."""
    core = client.CoreV1Api(api)
    session = stream(
        core.connect_get_namespaced_pod_exec,
        pod,
        namespace,
        command=["sh"],
        stdin=True,
        stdout=True,
        stderr=True,
        tty=False,
        _preload_content=False,
    )
    session.write_stdin("echo $((6 * 7))\n")
    output = ""
    deadline = time.monotonic() + 15
    while "42" not in output and time.monotonic() < deadline:
        session.update(timeout=1)
        output += session.read_stdout()
    session.write_stdin("exit\n")
    session.close()
    assert "42" in output, output


def port_forward(api: client.ApiClient, pod: str = "web", namespace: str = "default") -> None:
    """An HTTP request through ``portforward`` to port 8080 of ``pod`` (busybox httpd)."""
    core = client.CoreV1Api(api)
    forward = portforward(core.connect_get_namespaced_pod_portforward, pod, namespace, ports="8080")
    sock = forward.socket(8080)
    sock.setblocking(True)
    sock.sendall(b"GET /index.html HTTP/1.0\r\nHost: pod\r\n\r\n")
    answer = b""
    while chunk := sock.recv(65536):
        answer += chunk
    sock.close()
    assert answer.split(b" ", 2)[1] == b"200", answer[:200]
    assert answer.endswith(b"hello\n"), answer[-200:]
    assert forward.error(8080) is None, forward.error(8080)


CHECKS: dict[str, Callable[[client.ApiClient], None]] = {
    "create_daemon_set": create_daemon_set,
    "create_replica_set": create_replica_set,
    "watch_daemon_sets": watch_daemon_sets,
    "delete_service": delete_service,
    "delete_service_account": delete_service_account,
    "exec_text_stdin": exec_text_stdin,
    "port_forward": port_forward,
}


def main(argv: list[str]) -> int:
    kubeconfig, *names = argv
    configuration = client.Configuration()
    config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
    print(f"kubernetes client {client.__version__}", flush=True)
    with client.ApiClient(configuration) as api:
        _namespace(api)
        for name in names:
            CHECKS[name](api)
            print(f"ok {name}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
