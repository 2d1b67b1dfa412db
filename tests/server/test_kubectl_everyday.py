"""Everyday kubectl (1.32) commands against a real ``k3py server`` that need no node."""

from __future__ import annotations

import json
from pathlib import Path

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
