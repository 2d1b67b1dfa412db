"""The server's own distribution points and K3s's componentstatuses, against a real server.

``/static/install.sh`` is anonymous and is the packaged script; the wheel needs the join token
and names the one version the server runs. ``kubectl get componentstatuses`` lists the
scheduler, the controller-manager and etcd-0 as K3s's does, Healthy while the control plane's
Lease is held and renewed.
"""

from __future__ import annotations

import time

import pytest

from k3py import __version__
from k3py.cluster import install
from tests.server.process import ServerProcess

pytestmark = pytest.mark.integration


def _raw(cluster: ServerProcess, path: str, headers: dict[str, str]) -> tuple[int, bytes]:
    conn = cluster.connection(client_cert=False)
    try:
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def test_install_script_is_anonymous_and_the_wheel_needs_the_join_token(
    cluster: ServerProcess,
) -> None:
    code, body = _raw(cluster, "/static/install.sh", {})
    assert code == 200
    assert body == install.script()
    code, body = _raw(cluster, "/static/k3py.whl", {})
    assert code == 401
    assert b"join token" in body
    code, _ = _raw(cluster, "/static/k3py.whl", {"Authorization": "Bearer K10" + "0" * 64})
    assert code == 401
    token = (cluster.data_dir / "server" / "token").read_text().strip()
    code, body = _raw(
        cluster, "/static/k3py-9.9.9-py3-none-any.whl", {"Authorization": f"Bearer {token}"}
    )
    assert code == 404
    assert f"runs k3py {__version__}".encode() in body


def test_componentstatuses_answer_as_k3s(cluster: ServerProcess) -> None:
    deadline = time.monotonic() + 30
    while True:
        out = cluster.kubectl("get", "componentstatuses", "--no-headers").stdout
        rows = {line.split()[0]: line.split()[1] for line in out.splitlines()}
        if rows.get("controller-manager") == "Healthy" or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert rows == {"scheduler": "Healthy", "controller-manager": "Healthy", "etcd-0": "Healthy"}
    header = cluster.kubectl("get", "cs").stdout.splitlines()[0].split()
    assert header == ["NAME", "STATUS", "MESSAGE", "ERROR"]
    one = cluster.kubectl("get", "cs", "scheduler", "-o", "json").stdout
    assert '"kind": "ComponentStatus"' in one
