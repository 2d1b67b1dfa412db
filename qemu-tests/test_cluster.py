"""The emulated cluster end to end: ``make qemu-cluster``'s harness, asserted.

One server and two agents (ARM64 and ARMv7) boot from the images as built, on one virtual
network; all three nodes turn Ready (the server runs workloads through its own agent), the
air-gap httpd DaemonSet runs a pod on each of them with addresses from three different pod
CIDRs, a pod on the ARMv7 board fetches the page from the ARM64 agent's pod by pod IP (VXLAN
between the boards) and then through a Service by its cluster DNS name, as the real ``kubectl``
on the host reports. The host's own namespace never gets a route to the cluster's addresses.
"""

from __future__ import annotations

import ipaddress
import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from qemu_cluster import AGENTS, NODES, ClusterReport, ClusterSettings, run_cluster
from qemu_kubectl import WORKLOAD
from qemu_podnet import PAGE_MARK

from tests.image.builds import ImageFor

pytestmark = [pytest.mark.qemu, pytest.mark.timeout(1800)]
CLUSTER_NETWORKS = (ipaddress.ip_network("10.42.0.0/16"), ipaddress.ip_network("10.43.0.0/16"))


def host_routes_into_the_cluster() -> list[str]:
    """Routes of the machine's own namespace that would carry cluster addresses."""
    routes = json.loads(
        subprocess.run(
            ["ip", "-j", "-4", "route", "show", "table", "all"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    found = []
    for route in routes:
        destination = str(route.get("dst", "default"))
        if destination == "default":
            continue
        network = ipaddress.ip_network(destination, strict=False)
        if any(network.overlaps(cluster) for cluster in CLUSTER_NETWORKS):
            found.append(json.dumps(route))
    return found


def test_three_boards_join_run_a_workload_and_reach_each_other_over_the_pod_network(
    image_for: ImageFor, tmp_path: Path, record_property: Callable[[str, object], None]
) -> None:
    if shutil.which("kubectl") is None:
        pytest.fail("kubectl is missing (the integration tier installs it at /usr/bin/kubectl)")
    before = host_routes_into_the_cluster()
    # The session's images (built once, shared with the image tier and the other QEMU tests).
    prebuilt = tuple((spec.image_name, image_for(spec.board, spec.role).image) for spec in NODES)
    settings = ClusterSettings(out_dir=tmp_path, images_dir=tmp_path / "images", prebuilt=prebuilt)
    report = ClusterReport()
    try:
        run_cluster(settings, report)
    finally:
        for name, seconds in report.timings.items():
            record_property(name, round(seconds, 1))

    names = {spec.name for spec in NODES}
    ready = {name for name, node in report.nodes.items() if node["ready"] == "True"}
    assert names <= ready, report.nodes_wide
    assert {report.nodes[spec.name]["arch"] for spec in AGENTS} == {"arm64", "arm"}
    for spec in NODES:
        assert report.nodes[spec.name]["ip"] == spec.address, report.nodes_wide
    running = [pod for pod in report.pods if pod["phase"] == "Running"]
    assert {pod["node"] for pod in running} == names, report.pods_wide
    assert all(pod["name"].startswith(WORKLOAD) for pod in running)
    # Every pod's address comes from its own node's pod CIDR, three CIDRs in all.
    for pod in running:
        cidr = ipaddress.ip_network(report.nodes[pod["node"]]["podCIDR"])
        assert ipaddress.ip_address(pod["ip"]) in cidr, report.pods_wide
    assert len({report.nodes[name]["podCIDR"] for name in names}) == 3, report.nodes_wide

    by_node = {pod["node"]: pod for pod in running}
    armv7, arm64 = AGENTS[1].name, AGENTS[0].name
    direct = report.exchanges["pod IP"]
    assert direct.client_node == armv7
    assert direct.url.startswith(f"http://{by_node[arm64]['ip']}:")
    assert PAGE_MARK in direct.output
    service = report.exchanges["service DNS"]
    assert service.client_node == armv7
    assert service.url == "http://web.default.svc.cluster.local/"
    assert PAGE_MARK in service.output
    assert "web" in report.services_wide

    assert host_routes_into_the_cluster() == before == []
