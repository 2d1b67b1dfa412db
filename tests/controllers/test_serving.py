"""``k3py server``'s control-plane flags, and how the server reaches its own API."""

from __future__ import annotations

import argparse

import pytest

from k3py.cluster.server import cli
from k3py.cluster.server.controllers.serving import control_plane_settings, loopback_url
from k3py.errors import UsageError


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_flags_reach_the_control_plane_settings() -> None:
    settings = cli.settings_from(
        parse(
            "--node-monitor-grace-period", "20",
            "--disable-scheduler",
            "--disable-controller", "job,daemonset",
            "--disable-controller", "endpoints",
            "--cluster-cidr", "10.50.0.0/16",
        )
    )  # fmt: skip
    plane = control_plane_settings(settings)
    assert plane.node_monitor_grace_period == 20.0
    assert plane.cluster_cidr == "10.50.0.0/16"
    assert plane.disabled == {"scheduler", "job", "daemonset", "endpoints"}
    assert plane.enabled("deployment")
    defaults = control_plane_settings(cli.settings_from(parse()))
    assert defaults.node_monitor_grace_period == 40.0
    assert defaults.disabled == frozenset()


def test_an_unknown_controller_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="'jobs' is not a controller"):
        cli.settings_from(parse("--disable-controller", "jobs"))


def test_the_server_reaches_itself_where_it_listens() -> None:
    assert loopback_url("0.0.0.0", 6443) == "https://127.0.0.1:6443"
    assert loopback_url("192.0.2.10", 6443) == "https://192.0.2.10:6443"
    assert loopback_url("::", 6443) == "https://127.0.0.1:6443"
    assert loopback_url("2001:db8::1", 6443) == "https://[2001:db8::1]:6443"
