"""A real operator (kopf) with only a ServiceAccount token, held to its namespace by RBAC.

The operator (:mod:`tests.identity.operator_app`) runs as its own process, ``kopf run
--standalone --namespace <ns>``, with a kubeconfig that holds nothing but a token from
``kubectl create token`` and the cluster CA. Its ServiceAccount is granted, by a Role and a
RoleBinding in that namespace, what a namespace-scoped kopf deployment needs: its CRD's objects
(get, list, watch, patch) and their status, ConfigMaps (get, create, update) and Events
(create). Nothing cluster-wide: ``--standalone`` drops kopf's peering objects and the operator
turns off kopf's cluster-wide scanning of CRDs and namespaces. Without the RoleBinding the same
operator is refused with 403 and logs the Forbidden; with it, a Widget gets its ConfigMap and
its status.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.crd.manifests import namespaced_crd
from tests.processes import stop_process
from tests.server.process import ServerProcess

pytestmark = pytest.mark.integration

NS = "widgets"
ACCOUNT = "widget-operator"
APP = Path(__file__).with_name("operator_app.py")
CRD = namespaced_crd(
    "demo.k3py.io", "Widget", {"colour": {"type": "string"}, "size": {"type": "integer"}}
)
ROLE: dict[str, Any] = {
    "apiVersion": "rbac.authorization.k8s.io/v1",
    "kind": "Role",
    "metadata": {"name": ACCOUNT, "namespace": NS},
    "rules": [
        {
            "apiGroups": ["demo.k3py.io"],
            "resources": ["widgets"],
            "verbs": ["get", "list", "watch", "patch"],
        },
        {"apiGroups": ["demo.k3py.io"], "resources": ["widgets/status"], "verbs": ["get", "patch"]},
        {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "create", "update"]},
        {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},
    ],
}


def widget(name: str, colour: str) -> dict[str, Any]:
    return {
        "apiVersion": "demo.k3py.io/v1",
        "kind": "Widget",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"colour": colour, "size": 3},
    }


def wait_until(check: Callable[[], bool], seconds: float, what: str, log: Path) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}; operator log:\n{log.read_text()}")
        time.sleep(0.3)


class Operator:
    """``kopf run`` of the test operator with the token kubeconfig, logging to a file."""

    def __init__(self, kubeconfig: Path, log: Path) -> None:
        self.log = log
        argv = [sys.executable, "-m", "kopf", "run", "--standalone", "--namespace", NS, str(APP)]
        env = {"KUBECONFIG": str(kubeconfig), "PATH": "/usr/bin:/bin", "HOME": str(log.parent)}
        with log.open("wb") as out:
            self.process = subprocess.Popen(
                argv, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=log.parent
            )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        stop_process(self.process, grace=10)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = ServerProcess(tmp_path_factory.mktemp("kopf-server"))
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def token_kubeconfig(cluster: ServerProcess) -> Path:
    """The CRD, the namespace, the account and its Role (not bound yet); a kubeconfig holding
    only the account's token and the cluster CA."""
    cluster.kubectl("apply", "-f", "-", stdin=json.dumps(CRD))
    cluster.kubectl(
        "wait", "--for=condition=Established", "crd/widgets.demo.k3py.io", "--timeout=30s"
    )
    cluster.kubectl("create", "namespace", NS)
    cluster.kubectl("create", "serviceaccount", ACCOUNT, "-n", NS)
    cluster.kubectl("apply", "-f", "-", stdin=json.dumps(ROLE))
    token = cluster.kubectl("create", "token", ACCOUNT, "-n", NS, "--duration=1h").stdout.strip()
    ca = cluster.data_dir / "server/tls/server-ca.crt"
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "k3py", "cluster": {"server": cluster.url, "certificate-authority": str(ca)}}
        ],
        "users": [{"name": ACCOUNT, "user": {"token": token}}],
        "contexts": [{"name": ACCOUNT, "context": {"cluster": "k3py", "user": ACCOUNT}}],
        "current-context": ACCOUNT,
    }
    path = cluster.root / "operator.kubeconfig"
    path.write_text(yaml.safe_dump(config))
    return path


def _get(cluster: ServerProcess, *args: str) -> dict[str, Any] | None:
    result = cluster.kubectl("get", *args, "-n", NS, "-o", "json", check=False)
    return json.loads(result.stdout) if result.returncode == 0 else None


def test_without_the_binding_the_operator_is_forbidden(
    cluster: ServerProcess, token_kubeconfig: Path
) -> None:
    cluster.kubectl("apply", "-f", "-", stdin=json.dumps(widget("early", "red")))
    operator = Operator(token_kubeconfig, cluster.root / "kopf-unbound.log")
    try:
        wait_until(
            lambda: "Forbidden" in operator.output(), 30, "the operator's Forbidden", operator.log
        )
    finally:
        operator.stop()
    log = operator.output()
    assert "APIForbiddenError" in log, log
    assert (
        f'widgets.demo.k3py.io is forbidden: User "system:serviceaccount:{NS}:{ACCOUNT}" cannot '
        f'list resource "widgets" in API group "demo.k3py.io" in the namespace "{NS}"'
    ) in log
    assert _get(cluster, "configmap", "early-config") is None
    early = _get(cluster, "widget", "early")
    assert early is not None
    assert not early.get("status")


def test_the_bound_operator_creates_a_config_map_and_sets_status(
    cluster: ServerProcess, token_kubeconfig: Path
) -> None:
    cluster.kubectl(
        "create", "rolebinding", ACCOUNT, "-n", NS, f"--role={ACCOUNT}",
        f"--serviceaccount={NS}:{ACCOUNT}",
    )  # fmt: skip
    operator = Operator(token_kubeconfig, cluster.root / "kopf-bound.log")
    try:
        for name, colour in (("early", "red"), ("gadget", "blue")):  # early: there already
            cluster.kubectl("apply", "-f", "-", stdin=json.dumps(widget(name, colour)))
        for name, colour in (("early", "red"), ("gadget", "blue")):

            def ready(name: str = name) -> bool:
                obj = _get(cluster, "widget", name)
                return bool(obj and (obj.get("status") or {}).get("phase") == "Ready")

            wait_until(ready, 45, f"widget {name}'s status", operator.log)
            config_map = _get(cluster, "configmap", f"{name}-config")
            assert config_map is not None
            assert config_map["data"] == {"colour": colour, "size": "3"}
            owner = config_map["metadata"]["ownerReferences"][0]
            assert (owner["kind"], owner["name"]) == ("Widget", name)
            status = (_get(cluster, "widget", name) or {})["status"]
            assert status["configMap"] == f"{name}-config"
        # The operator follows a change of the spec.
        cluster.kubectl("patch", "widget", "gadget", "-n", NS, "--type=merge", "-p",
                        '{"spec": {"colour": "green"}}')  # fmt: skip
        wait_until(
            lambda: ((_get(cluster, "configmap", "gadget-config") or {}).get("data") or {}).get(
                "colour"
            )
            == "green",
            30,
            "the ConfigMap to follow the spec",
            operator.log,
        )
    finally:
        operator.stop()
    assert "Forbidden" not in operator.output(), operator.output()
