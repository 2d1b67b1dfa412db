"""Everyday kubectl (1.32) commands against a real ``k3py server`` that need no node."""

from __future__ import annotations

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
