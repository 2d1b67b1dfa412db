"""The kubernetes Endpoints of several API servers: live Leases only, one subset per port."""

from __future__ import annotations

import datetime
from typing import Any

from k3py.cluster.server.apiservers import lease_name, live_endpoints, stale_leases, subsets

NOW = datetime.datetime(2026, 1, 1, 12, 0, 0, tzinfo=datetime.UTC)


def _lease(holder: str, seconds_ago: float, duration: int = 15) -> dict[str, Any]:
    renewed = NOW - datetime.timedelta(seconds=seconds_ago)
    return {
        "spec": {
            "holderIdentity": holder,
            "leaseDurationSeconds": duration,
            "renewTime": renewed.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        }
    }


def test_only_servers_that_renewed_within_their_lease_are_live() -> None:
    leases = [
        _lease("192.0.2.2:6443", 3),
        _lease("192.0.2.1:6443", 14.9),
        _lease("192.0.2.3:6443", 15.1),  # dead: dropped
        {"spec": {"holderIdentity": "192.0.2.4:6443"}},  # never renewed
    ]
    assert live_endpoints(leases, NOW) == ["192.0.2.1:6443", "192.0.2.2:6443"]


def test_holders_that_are_not_addresses_are_ignored() -> None:
    assert subsets(["vm_32075", "192.0.2.1:6443"]) == subsets(["192.0.2.1:6443"])


def test_servers_sharing_a_port_share_a_subset() -> None:
    assert subsets(
        ["192.0.2.2:6443", "127.0.0.1:7443", "192.0.2.1:6443", "[2001:db8::1]:6443"]
    ) == [
        {
            "addresses": [{"ip": "192.0.2.1"}, {"ip": "192.0.2.2"}, {"ip": "2001:db8::1"}],
            "ports": [{"name": "https", "port": 6443, "protocol": "TCP"}],
        },
        {
            "addresses": [{"ip": "127.0.0.1"}],
            "ports": [{"name": "https", "port": 7443, "protocol": "TCP"}],
        },
    ]


def test_each_server_has_its_own_lease_name() -> None:
    assert lease_name("192.0.2.1:6443") != lease_name("192.0.2.1:6444")
    assert lease_name("192.0.2.1:6443").startswith("apiserver-")


def test_leases_left_for_an_hour_are_stale() -> None:
    recent, old = _lease("192.0.2.1:6443", 3599), _lease("192.0.2.2:6443", 3601)
    assert stale_leases([recent, old], NOW) == [old]
