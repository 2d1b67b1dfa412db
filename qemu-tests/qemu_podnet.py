"""The emulated cluster's pod network and services, checked the way a user checks them.

After the workload runs on every board, ``make qemu-cluster`` asks what a K3s user asks next:
do the pods' addresses come from each node's own pod CIDR (``kubectl get pods -o wide``), does a
pod on one board reach a pod on another board by its address (VXLAN between the boards, over
the harness's multicast segment), and does a Service answer by its DNS name from a pod. Each
exchange is a real ``kubectl exec … wget -qO- URL`` through the agent's tunnel, retried while the
network settles, and kept (command, answer, time) so the harness can print it and the test can
assert on it. Nothing here touches the host's network: every packet stays inside the VMs.
"""

from __future__ import annotations

import ipaddress
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass

from qemu_driver import timeout_factor
from qemu_kubectl import HTTPD_PORT

Kubectl = Callable[..., "subprocess.CompletedProcess[str]"]
SERVICE_NAME = "web"
SERVICE_PORT = 80
PAGE_MARK = "served by busybox httpd"  # in the air-gap image's index.html


class NetworkCheckError(AssertionError):
    """A pod network or service check failed; the message names the pods and the last answer."""


@dataclass(frozen=True)
class Exchange:
    """One request from a pod, as ``kubectl exec`` ran it, and its answer."""

    client_pod: str
    client_node: str
    url: str
    target: str  # what the URL points at, in words
    command: str
    output: str
    seconds: float  # from the first attempt to the answer

    def shown(self) -> str:
        answer = "\n".join(f"  | {line}" for line in self.output.strip().splitlines())
        return (
            f"pod {self.client_pod} on {self.client_node} -> {self.url} ({self.target}),"
            f" answered after {self.seconds:.1f}s:\n  $ {self.command}\n{answer}"
        )


def pod_cidr_problems(
    pods: list[dict[str, str]], node_cidrs: dict[str, str], nodes: set[str]
) -> list[str]:
    """What is wrong with the pods' addresses: each node's pod inside that node's CIDR, and
    the given nodes' pods in as many different CIDRs as there are nodes."""
    problems = []
    cidrs_seen = set()
    for pod in pods:
        if pod["node"] not in nodes:
            continue
        cidr = node_cidrs.get(pod["node"], "")
        if not cidr or not pod["ip"]:
            problems.append(f"{pod['name']} on {pod['node']}: podIP {pod['ip']!r} podCIDR {cidr!r}")
            continue
        if ipaddress.ip_address(pod["ip"]) not in ipaddress.ip_network(cidr):
            problems.append(f"{pod['name']} on {pod['node']}: {pod['ip']} is outside {cidr}")
        cidrs_seen.add(cidr)
    if len(cidrs_seen) != len(nodes):
        problems.append(f"the pods sit in {len(cidrs_seen)} pod CIDRs, not {len(nodes)}")
    return problems


def fetch_from_pod(
    kubectl: Kubectl,
    client: dict[str, str],
    url: str,
    target: str,
    seconds: float,
) -> Exchange:
    """``kubectl exec <client> -- wget -qO- <url>`` until the page comes back (routes, FDB
    entries and service rules are programmed a moment after the pods start)."""
    argv = ["exec", client["name"], "--", "wget", "-T", "10", "-qO-", url]
    command = "kubectl " + " ".join(argv)
    started = time.monotonic()
    deadline = started + seconds * timeout_factor()
    while True:
        result = kubectl(*argv, check=False)
        if result.returncode == 0 and PAGE_MARK in result.stdout:
            return Exchange(
                client["name"], client["node"], url, target, command, result.stdout,
                time.monotonic() - started,
            )  # fmt: skip
        if time.monotonic() > deadline:
            said = (result.stdout + result.stderr).strip() or f"exit {result.returncode}"
            raise NetworkCheckError(
                f"{command} (from {client['node']} to {target}) got no page within"
                f" {seconds * timeout_factor():.0f}s; last answer: {said}"
            )
        time.sleep(3)


def expose(kubectl: Kubectl, pod: dict[str, str], selector: str) -> str:
    """``kubectl expose`` of the workload (its pods' common label) as a ClusterIP Service;
    returns the service's cluster DNS name."""
    kubectl(
        "expose", "pod", pod["name"], "--name", SERVICE_NAME, "--selector", selector,
        "--port", str(SERVICE_PORT), "--target-port", str(HTTPD_PORT),
    )  # fmt: skip
    return f"{SERVICE_NAME}.default.svc.cluster.local"
