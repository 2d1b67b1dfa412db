"""componentstatuses' health from the control plane's Lease: held and renewed, or why not."""

from __future__ import annotations

import datetime

from k3py.cluster.server.componentstatus import lease_problem, request_attributes

NOW = datetime.datetime(2026, 12, 5, 1, 0, 0, tzinfo=datetime.UTC)


def _lease(holder: str | None, renewed_seconds_ago: float) -> dict[str, object]:
    renewed = NOW - datetime.timedelta(seconds=renewed_seconds_ago)
    return {
        "spec": {
            "holderIdentity": holder,
            "leaseDurationSeconds": 15,
            "renewTime": renewed.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        }
    }


def test_a_held_and_renewed_lease_is_healthy() -> None:
    assert lease_problem(_lease("server-a", 3), NOW) is None


def test_a_lease_left_unrenewed_names_the_leader_and_its_age() -> None:
    assert lease_problem(_lease("server-a", 40), NOW) == (
        "the leader server-a last renewed its lease 40 s ago"
    )


def test_no_lease_or_no_holder_is_unhealthy() -> None:
    assert lease_problem(None, NOW) == "no server has taken the control plane's lease yet"
    assert lease_problem(_lease(None, 1), NOW) == "no server holds the control plane's lease"


def test_the_authorizer_sees_list_and_get_of_componentstatuses() -> None:
    listed = request_attributes("/api/v1/componentstatuses", "GET")
    assert listed is not None
    assert (listed.verb, listed.resource, listed.name) == ("list", "componentstatuses", "")
    one = request_attributes("/api/v1/componentstatuses/scheduler", "GET")
    assert one is not None
    assert (one.verb, one.name) == ("get", "scheduler")
    assert request_attributes("/api/v1/pods", "GET") is None
