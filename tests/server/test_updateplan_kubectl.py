"""The UpdatePlan kind (ota.k3py.io/v1) through the real kubectl: apply, get with its progress
columns, describe, explain, patch of its status subresource, and a refused invalid plan."""

from __future__ import annotations

import json
import time

import pytest

from tests.server.process import ServerProcess

pytestmark = pytest.mark.integration

PLAN = """\
apiVersion: ota.k3py.io/v1
kind: UpdatePlan
metadata:
  name: fw-0-2-0
spec:
  version: 0.2.0
  nodeSelector: {k3py.io/ring: field}
  maxUnavailable: 1
  canary: 1
  pauseSeconds: 30
  drain: true
  failureThreshold: 2
"""


def test_update_plans_through_kubectl(cluster: ServerProcess) -> None:
    applied = cluster.kubectl("apply", "-f", "-", stdin=PLAN)
    assert "updateplan.ota.k3py.io/fw-0-2-0 created" in applied.stdout
    # The controller writes the status: no node carries the selected label.
    deadline = time.monotonic() + 20
    while "Progressing" not in cluster.kubectl("get", "updateplans").stdout:
        assert time.monotonic() < deadline, "the controller never wrote the plan's status"
        time.sleep(0.2)
    table = cluster.kubectl("get", "updateplans").stdout.split()
    assert table[:7] == ["NAME", "VERSION", "PHASE", "HEALTHY", "UPDATING", "FAILED", "AGE"]
    assert table[7:13] == ["fw-0-2-0", "0.2.0", "Progressing", "0/0", "0", "0"]
    described = cluster.kubectl("describe", "updateplan", "fw-0-2-0").stdout
    assert "Max Unavailable:" in described
    assert "Failure Threshold:" in described
    assert "0/0 healthy" in described
    explained = cluster.kubectl("explain", "updateplan.spec").stdout
    assert "maxUnavailable" in explained
    assert "failureThreshold" in explained
    # A spec change through the main endpoint keeps the status (the controller's).
    cluster.kubectl("patch", "updateplan", "fw-0-2-0", "--type=merge",
                    "-p", '{"spec": {"maxUnavailable": "20%"}}')  # fmt: skip
    got = json.loads(cluster.kubectl("get", "updateplan", "fw-0-2-0", "-o", "json").stdout)
    assert got["spec"]["maxUnavailable"] == "20%"
    assert got["status"]["phase"] == "Progressing"
    invalid = PLAN.replace("fw-0-2-0", "bad").replace("canary: 1", "canary: -1")
    bad = cluster.kubectl("apply", "-f", "-", check=False, stdin=invalid)
    assert bad.returncode != 0
    assert "spec.canary" in bad.stderr
    cluster.kubectl("delete", "updateplan", "fw-0-2-0")
