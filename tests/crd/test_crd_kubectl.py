"""The life cycle of a CustomResourceDefinition through the real kubectl.

Create the CRD and wait for Established, explain the new kind, apply objects (an unknown field
refused by kubectl's validation, pruned with ``--validate=false``; a wrong type and a value
outside the enum refused by the schema either way), defaults and pruning in ``get -o yaml``,
the printer columns, the status subresource, ``kubectl scale``, a watch, the second served
version, and the deletion of the CRD taking its objects and its kind with it.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
import yaml

from tests.server.process import KUBECTL, ServerProcess

pytestmark = pytest.mark.integration

CRD = Path(__file__).with_name("widgets.yaml")
WIDGET = """\
apiVersion: example.com/v1
kind: Widget
metadata:
  name: {name}
spec:
  size: {size}
{extra}"""


def widget(name: str, size: str = "small", extra: str = "") -> str:
    return WIDGET.format(name=name, size=size, extra=extra)


def test_crd_life_cycle(server: ServerProcess) -> None:
    created = server.kubectl("apply", "-f", str(CRD))
    assert "customresourcedefinition.apiextensions.k8s.io/widgets.example.com created" in (
        created.stdout
    )
    server.kubectl(
        "wait", "--for=condition=Established", "crd/widgets.example.com", "--timeout=20s"
    )
    crds = server.kubectl("get", "crd").stdout.split()
    assert crds[:4] == ["NAME", "CREATED", "AT", "widgets.example.com"]
    resources = server.kubectl("api-resources", "--api-group=example.com").stdout
    assert resources.splitlines()[1].split() == [
        "widgets",
        "wd",
        "example.com/v1",
        "true",
        "Widget",
    ]

    explained = server.kubectl("explain", "widgets.spec").stdout
    assert "How big the widget is." in explained
    assert "size\t<string> -required-" in explained

    # An unknown field: kubectl's (strict) validation refuses it; without it, it is pruned.
    bogus = widget("w1", extra="  bogus: 1\n  extra: {kept: [1, 2]}\nstatus: {phase: Made}\n")
    refused = server.kubectl("apply", "-f", "-", stdin=bogus, check=False)
    assert refused.returncode != 0
    assert 'unknown field "spec.bogus"' in refused.stderr
    server.kubectl("apply", "--validate=false", "-f", "-", stdin=bogus)
    stored = yaml.safe_load(server.kubectl("get", "widget", "w1", "-o", "yaml").stdout)
    assert stored["apiVersion"] == "example.com/v1"
    assert stored["spec"] == {
        "size": "small",
        "replicas": 1,  # defaulted
        "color": "blue",  # defaulted
        "extra": {"kept": [1, 2]},  # x-kubernetes-preserve-unknown-fields
    }
    assert "status" not in stored  # a status subresource: the main resource ignores it

    # Wrong types and values: the schema refuses them, with or without client validation.
    invalid = widget("w2", size="huge", extra="  replicas: three\n")
    for flags in ((), ("--validate=false",)):
        result = server.kubectl("apply", *flags, "-f", "-", stdin=invalid, check=False)
        assert result.returncode != 0
        assert 'The Widget "w2" is invalid' in result.stderr
        assert (
            'spec.replicas: Invalid value: "string": spec.replicas in body must be of type'
            ' integer: "string"' in result.stderr
        )
        assert (
            'spec.size: Unsupported value: "huge": supported values: "small", "medium",'
            ' "large"' in result.stderr
        )
    missing = server.kubectl(
        "apply", "-f", "-", stdin="apiVersion: example.com/v1\nkind: Widget\n"
        "metadata: {name: w3}\nspec: {replicas: 2}\n", check=False,
    )  # fmt: skip
    assert "spec.size: Required value" in missing.stderr

    server.kubectl("apply", "-f", "-", stdin=widget("w2", size="large"))
    table = [line.split() for line in server.kubectl("get", "widgets").stdout.splitlines()]
    assert table[0] == ["NAME", "SIZE", "REPLICAS", "AGE"]
    assert [row[:3] for row in table[1:]] == [["w1", "small", "1"], ["w2", "large", "1"]]
    by_name = server.kubectl("get", "wd", "--field-selector", "metadata.name=w2", "-o", "name")
    assert by_name.stdout.split() == ["widget.example.com/w2"]
    elsewhere = server.kubectl(
        "get", "wd", "-A", "--field-selector", "metadata.namespace=kube-system", "-o", "name"
    )
    assert elsewhere.stdout.strip() == ""

    # Server-side apply: a second manager's change of an owned field is a conflict.
    applied = server.kubectl("apply", "--server-side", "-f", "-", stdin=widget("w4"))
    assert "widget.example.com/w4 serverside-applied" in applied.stdout
    conflict = server.kubectl(
        "apply", "--server-side", "--field-manager=other", "-f", "-",
        stdin=widget("w4", size="large"), check=False,
    )  # fmt: skip
    assert conflict.returncode != 0
    assert 'conflict with "kubectl" using example.com/v1: .spec.size' in conflict.stderr
    server.kubectl(
        "apply", "--server-side", "--field-manager=other", "--force-conflicts", "-f", "-",
        stdin=widget("w4", size="large"),
    )  # fmt: skip
    assert server.kubectl("get", "widget", "w4", "-o", "jsonpath={.spec.size}").stdout == "large"
    server.kubectl("delete", "widget", "w4")

    # The status subresource: a status update changes only the status.
    server.kubectl(
        "patch", "widget", "w1", "--subresource=status", "--type=merge",
        "-p", '{"status": {"phase": "Ready", "replicas": 1}, "spec": {"size": "large"}}',
    )  # fmt: skip
    stored = yaml.safe_load(server.kubectl("get", "widget", "w1", "-o", "yaml").stdout)
    assert stored["status"] == {"phase": "Ready", "replicas": 1}
    assert stored["spec"]["size"] == "small"
    server.kubectl("patch", "widget", "w1", "--type=merge", "-p", '{"status": {"phase": "X"}}')
    assert server.kubectl("get", "widget", "w1", "-o", "jsonpath={.status.phase}").stdout == (
        "Ready"
    )

    # The scale subresource, through kubectl scale, while a watch follows the objects.
    env = {"KUBECONFIG": str(server.kubeconfig), "HOME": str(server.root)}
    env["KUBECACHEDIR"] = str(server.root / "kube-cache")
    with subprocess.Popen(
        [KUBECTL, "get", "widgets", "--watch", "--output-watch-events"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    ) as watch:
        try:
            time.sleep(0.5)
            scaled = server.kubectl("scale", "widget", "w1", "--replicas=3")
            assert "widget.example.com/w1 scaled" in scaled.stdout
            assert (
                server.kubectl("get", "widget", "w1", "-o", "jsonpath={.spec.replicas}").stdout
                == "3"
            )
            time.sleep(0.5)
        finally:
            watch.terminate()
        lines = (watch.stdout.read() if watch.stdout else "").splitlines()
    events = [line.split()[:2] for line in lines[1:]]
    assert events[:2] == [["ADDED", "w1"], ["ADDED", "w2"]]
    assert ["MODIFIED", "w1"] in events[2:]
    assert lines[0].split() == ["EVENT", "NAME", "SIZE", "REPLICAS", "AGE"]

    # The second version serves the same objects (None conversion).
    beta = yaml.safe_load(
        server.kubectl("get", "widgets.v1beta1.example.com", "w1", "-o", "yaml").stdout
    )
    assert beta["apiVersion"] == "example.com/v1beta1"
    assert beta["spec"]["replicas"] == 3

    # Deleting the CRD removes its objects and its kind.
    server.kubectl("delete", "crd", "widgets.example.com", "--timeout=30s")
    status, _ = server.request("GET", "/apis/example.com/v1/namespaces/default/widgets")
    assert status == 404
    assert server.kubectl("get", "crd", "-o", "name").stdout.strip() == ""
    server.kubectl("apply", "-f", str(CRD))
    server.kubectl(
        "wait", "--for=condition=Established", "crd/widgets.example.com", "--timeout=20s"
    )
    assert server.kubectl("get", "widgets", "-A", "-o", "name").stdout.strip() == ""
    server.kubectl("delete", "crd", "widgets.example.com")
