"""The pod network on one node: 200 sandboxes leave nothing behind; ``none`` removes it all.

The sandboxes are processes in network namespaces of their own, wired by the pod network's own
code (:mod:`tests.netns.churn`): the network's part of a pod's life without Docker's, so that
200 of them take seconds. Five are removed without a detach, as if the agent had been away:
the reconcile at start releases them. An agent started with ``--flannel-backend none`` over
the data directory of an earlier pod network removes its bridge, rules and state.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.netns.topology import Topology, assert_host_namespace_clean, netns_tier

pytestmark = [*netns_tier(), pytest.mark.timeout(180)]


def test_200_sandboxes_created_and_removed_leave_no_address_and_no_veth() -> None:
    with Topology(1) as topology:
        host = topology.hosts[0]
        result = host.run(
            sys.executable, "-m", "tests.netns.churn", "--count", "200", "--kill", "5",
            timeout=150,
        )  # fmt: skip
        report = json.loads(result.stdout)
        assert report["distinct_addresses"] == 200
        assert report["left_before_reconcile"] == 5
        assert report["addresses_left"] == 0
        assert report["veths_left"] == 0
        assert host.json("ip", "-j", "link", "show", "master", "cni0") == []
    assert_host_namespace_clean()


def test_flannel_backend_none_removes_what_an_earlier_pod_network_made(tmp_path: Path) -> None:
    state_dir = tmp_path / "agent" / "network"
    with Topology(1) as topology:
        host = topology.hosts[0]
        host.run(
            sys.executable, "-m", "tests.netns.churn", "--count", "3", "--kill", "0",
            "--state-dir", str(state_dir),
        )  # fmt: skip
        assert host.has_link("cni0")
        assert host.run("nft", "list", "table", "inet", "k3py", check=False).returncode == 0
        leave = (
            "import asyncio, pathlib, sys\n"
            "from k3py.cluster.agent.workers import leave_host_network_alone\n"
            "from k3py.cluster.agent.settings import AgentSettings\n"
            "settings = AgentSettings('', None, None, pathlib.Path(sys.argv[1]), 'n')\n"
            "asyncio.run(leave_host_network_alone(settings))\n"
        )
        host.run(sys.executable, "-c", leave, str(tmp_path))
        assert not host.has_link("cni0")
        assert host.run("nft", "list", "table", "inet", "k3py", check=False).returncode != 0
        assert not state_dir.exists()
        host.run(sys.executable, "-c", leave, str(tmp_path))  # nothing left to do
