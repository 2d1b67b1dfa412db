"""Everyday kubectl (1.32) commands against a real ``k3py server`` that need no node."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.server.process import ServerProcess

pytestmark = pytest.mark.integration

WIDGET = """\
apiVersion: example.com/v1
kind: Widget
metadata:
  name: w
"""


def test_apply_of_an_unknown_kind_says_no_matches(cluster: ServerProcess, tmp_path: Path) -> None:
    # The v3 documents do not describe the kind, so kubectl reads /openapi/v2 as protobuf.
    path = tmp_path / "widget.yaml"
    path.write_text(WIDGET)
    result = cluster.kubectl("apply", "-f", str(path), check=False)
    assert result.returncode != 0
    assert 'no matches for kind "Widget" in version "example.com/v1"' in result.stderr
    assert "content type" not in result.stderr


def test_explain_from_the_v2_protobuf_document(cluster: ServerProcess) -> None:
    out = cluster.kubectl(
        "explain", "deployment.spec.strategy", "--output=plaintext-openapiv2"
    ).stdout
    assert "KIND:     Deployment" in out
    assert "rollingUpdate" in out


def test_create_cronjob_and_a_job_from_it(cluster: ServerProcess) -> None:
    cluster.kubectl(
        "create",
        "cronjob",
        "tick",
        "--image=k3py-test/busybox:1",
        "--schedule=*/5 * * * *",
        "--",
        "sh",
        "-c",
        "date",
    )
    table = cluster.kubectl("get", "cronjob", "tick").stdout.splitlines()
    assert table[0].split() == [
        "NAME",
        "SCHEDULE",
        "TIMEZONE",
        "SUSPEND",
        "ACTIVE",
        "LAST",
        "SCHEDULE",
        "AGE",
    ]
    assert table[1].split()[1:7] == ["*/5", "*", "*", "*", "*", "<none>"]
    cluster.kubectl("create", "job", "by-hand", "--from=cronjob/tick")
    job = json.loads(cluster.kubectl("get", "job", "by-hand", "-o", "json").stdout)
    assert job["metadata"]["annotations"]["cronjob.kubernetes.io/instantiate"] == "manual"
    assert job["metadata"]["ownerReferences"][0]["kind"] == "CronJob"
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["sh", "-c", "date"]
    bad = cluster.kubectl(
        "create", "cronjob", "bad", "--image=x", "--schedule=61 * * * *", check=False
    )
    assert 'Invalid value: "61 * * * *"' in bad.stderr


def _wait(check: Callable[[], bool], what: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def _budget(cluster: ServerProcess) -> dict[str, Any]:
    out = cluster.kubectl("get", "pdb", "db", "-n", "drain", "-o", "json").stdout
    status: dict[str, Any] = json.loads(out).get("status") or {}
    return status


def test_drain_waits_for_a_disruption_budget(cluster: ServerProcess) -> None:
    node = {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": "drain-node"},
        # Tainted so that the scheduler puts no other test's pods here.
        "spec": {"taints": [{"key": "k3py.test/drain", "effect": "NoSchedule"}]},
        "status": {"conditions": [{"type": "Ready", "status": "True"}]},
    }
    cluster.kubectl("apply", "-f", "-", stdin=json.dumps(node))
    cluster.kubectl("create", "namespace", "drain")
    for index in range(2):
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": f"db-{index}", "namespace": "drain", "labels": {"app": "db"}},
            "spec": {
                "nodeName": "drain-node",
                "terminationGracePeriodSeconds": 0,
                "containers": [{"name": "db", "image": "k3py-test/busybox:1"}],
            },
        }
        cluster.kubectl("apply", "-f", "-", stdin=json.dumps(pod))
        running = {
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}
        }
        code, body = cluster.request(
            "PATCH",
            f"/api/v1/namespaces/drain/pods/db-{index}/status",
            running,
            content_type="application/merge-patch+json",
        )
        assert code == 200, body
    budget = {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": "db", "namespace": "drain"},
        "spec": {"minAvailable": 2, "selector": {"matchLabels": {"app": "db"}}},
    }
    cluster.kubectl("apply", "-f", "-", stdin=json.dumps(budget))
    _wait(lambda: _budget(cluster).get("currentHealthy") == 2, "the budget's status")
    assert _budget(cluster)["disruptionsAllowed"] == 0
    table = cluster.kubectl("get", "pdb", "-n", "drain").stdout.splitlines()
    assert table[1].split()[:4] == ["db", "2", "N/A", "0"]

    blocked = cluster.kubectl(
        "drain",
        "drain-node",
        "--force",
        "--pod-selector=app=db",
        "--timeout=7s",
        check=False,
        timeout=60,
    )
    assert blocked.returncode != 0
    assert "violate the pod's disruption budget" in blocked.stdout + blocked.stderr
    assert (
        len(json.loads(cluster.kubectl("get", "pods", "-n", "drain", "-o", "json").stdout)["items"])
        == 2
    )

    cluster.kubectl(
        "patch", "pdb", "db", "-n", "drain", "--type=merge", "-p", '{"spec": {"minAvailable": 1}}'
    )
    _wait(lambda: _budget(cluster).get("disruptionsAllowed") == 1, "one allowed disruption")
    cluster.kubectl(
        "patch", "pdb", "db", "-n", "drain", "--type=merge", "-p", '{"spec": {"minAvailable": 0}}'
    )
    _wait(lambda: _budget(cluster).get("disruptionsAllowed") == 2, "two allowed disruptions")
    drained = cluster.kubectl(
        "drain", "drain-node", "--force", "--pod-selector=app=db", "--timeout=60s", timeout=120
    )
    assert "drained" in drained.stdout
    assert (
        json.loads(cluster.kubectl("get", "pods", "-n", "drain", "-o", "json").stdout)["items"]
        == []
    )
