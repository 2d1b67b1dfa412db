"""The emulated cluster end to end: ``make qemu-cluster``'s harness, asserted.

One server and two agents (ARM64 and ARMv7) boot from the images as built, on one virtual
network; both agents' nodes turn Ready at the server and the air-gap httpd DaemonSet runs a pod
on each of them, as the real ``kubectl`` on the host reports.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from qemu_cluster import AGENTS, SERVER, WORKLOAD, ClusterReport, ClusterSettings, run_cluster

from tests.image.builds import ImageFor

pytestmark = [pytest.mark.qemu, pytest.mark.timeout(1800)]


def test_agents_of_both_architectures_join_an_emulated_server_and_run_a_workload(
    image_for: ImageFor, tmp_path: Path, record_property: Callable[[str, object], None]
) -> None:
    if shutil.which("kubectl") is None:
        pytest.fail("kubectl is missing (the integration tier installs it at /usr/bin/kubectl)")
    # The session's images (built once, shared with the image tier and the other QEMU tests).
    prebuilt = tuple(
        (spec.image_name, image_for(spec.board, spec.role).image) for spec in (SERVER, *AGENTS)
    )
    settings = ClusterSettings(out_dir=tmp_path, images_dir=tmp_path / "images", prebuilt=prebuilt)
    report = ClusterReport()
    try:
        run_cluster(settings, report)
    finally:
        for name, seconds in report.timings.items():
            record_property(name, round(seconds, 1))

    agents = {spec.name: spec for spec in AGENTS}
    ready = {name for name, node in report.nodes.items() if node["ready"] == "True"}
    assert set(agents) <= ready, report.nodes_wide
    assert {report.nodes[name]["arch"] for name in agents} == {"arm64", "arm"}, report.nodes_wide
    for name, spec in agents.items():
        assert report.nodes[name]["ip"] == spec.address, report.nodes_wide
    running = [pod for pod in report.pods if pod["phase"] == "Running"]
    assert {pod["node"] for pod in running} == set(agents), report.pods_wide
    assert all(pod["name"].startswith(WORKLOAD) for pod in running)
