"""What the cluster harness asks the host's real ``kubectl``, and how it reads the answers.

Every call goes through the cluster's admin kubeconfig (pointed at the server's forwarded API
port) with a request timeout, so a board that stops answering fails a stage instead of hanging
it; the readers turn ``-o yaml`` lists into the few fields the harness prints and asserts on.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

WORKLOAD = "httpd"
WORKLOAD_IMAGE = "k3py.local/httpd:latest"  # the air-gap image every image carries
HTTPD_PORT = 8080  # that image's port (k3py.image.containers)


class KubectlError(AssertionError):
    """kubectl failed where the harness needs an answer; the message carries its stderr."""


def kubectl(kubeconfig: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        ["kubectl", "--kubeconfig", str(kubeconfig), "--request-timeout=30s", *args],
        capture_output=True,
        text=True,
        check=False,
    )
    if check and result.returncode != 0:
        raise KubectlError(f"kubectl {' '.join(args)} failed: {result.stderr.strip()}")
    return result


def nodes(kubeconfig: Path) -> dict[str, dict[str, str]]:
    result = kubectl(kubeconfig, "get", "nodes", "-o", "yaml", check=False)
    if result.returncode != 0:
        return {}
    found: dict[str, dict[str, str]] = {}
    for item in yaml.safe_load(result.stdout).get("items", []):
        status = item.get("status", {})
        ready = next(
            (c["status"] for c in status.get("conditions", []) if c.get("type") == "Ready"), ""
        )
        address = next(
            (a["address"] for a in status.get("addresses", []) if a.get("type") == "InternalIP"),
            "",
        )
        arch = status.get("nodeInfo", {}).get("architecture", "")
        cidr = item.get("spec", {}).get("podCIDR", "")
        found[item["metadata"]["name"]] = {
            "ready": ready, "arch": arch, "ip": address, "podCIDR": cidr
        }  # fmt: skip
    return found


def pods(kubeconfig: Path, selector: str) -> list[dict[str, str]]:
    result = kubectl(kubeconfig, "get", "pods", "-l", selector, "-o", "yaml", check=False)
    if result.returncode != 0:
        return []
    return [
        {
            "name": item["metadata"]["name"],
            "phase": item.get("status", {}).get("phase", ""),
            "node": item.get("spec", {}).get("nodeName", ""),
            "ip": item.get("status", {}).get("podIP", ""),
        }
        for item in yaml.safe_load(result.stdout).get("items", [])
    ]


def workload_manifest() -> str:
    """A DaemonSet of the air-gap httpd image: one pod on every node, whatever its CPU."""
    labels = {"app": WORKLOAD}
    daemonset = {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {"name": WORKLOAD, "namespace": "default"},
        "spec": {
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [
                        {
                            "name": "httpd",
                            "image": WORKLOAD_IMAGE,
                            "imagePullPolicy": "Never",  # air gap: the image is on the card
                            "ports": [{"containerPort": HTTPD_PORT}],
                        }
                    ]
                },
            },
        },
    }
    return yaml.safe_dump(daemonset, sort_keys=False)
