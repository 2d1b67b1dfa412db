"""200 sandboxes wired and removed on one node leave no address allocated and no veth.

The sandboxes are processes in network namespaces of their own, wired by the pod network's own
code (:mod:`tests.netns.churn`): the network's part of a pod's life without Docker's, so that
200 of them take seconds. Five are removed without a detach, as if the agent had been away:
the reconcile at start releases them.
"""

from __future__ import annotations

import json
import sys

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
