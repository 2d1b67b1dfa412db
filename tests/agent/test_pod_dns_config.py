"""Pods' resolv.conf by dnsPolicy and the service environment variables the kubelet sets."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from k3py.cluster.agent.podsync.dnsconfig import (
    DnsSettings,
    resolv_conf,
    service_env,
    static_services,
    write_resolv_conf,
)
from k3py.cluster.agent.podsync.spec import PodContext, resolve_env

Object = dict[str, Any]


@pytest.fixture
def settings(tmp_path: Path) -> DnsSettings:
    host = tmp_path / "resolv.conf"
    host.write_text("nameserver 192.0.2.1\nnameserver 192.0.2.2\nsearch lan\noptions edns0\n")
    return DnsSettings("10.43.0.10", "cluster.local", host)


def pod(namespace: str = "shop", **spec: Any) -> Object:
    return {"metadata": {"name": "p", "namespace": namespace, "uid": "u1"}, "spec": spec}


def test_cluster_first_points_at_the_cluster_dns(settings: DnsSettings) -> None:
    assert resolv_conf(pod(), settings) == (
        "nameserver 10.43.0.10\n"
        "search shop.svc.cluster.local svc.cluster.local cluster.local lan\n"
        "options ndots:5\n"
    )


def test_host_network_pods_use_the_node_unless_with_host_net(settings: DnsSettings) -> None:
    host = resolv_conf(pod(hostNetwork=True), settings)
    assert host.startswith("nameserver 192.0.2.1\nnameserver 192.0.2.2\nsearch lan\n")
    with_host_net = resolv_conf(
        pod(hostNetwork=True, dnsPolicy="ClusterFirstWithHostNet"), settings
    )
    assert with_host_net.startswith("nameserver 10.43.0.10\n")
    assert resolv_conf(pod(dnsPolicy="Default"), settings) == host


def test_none_takes_only_dns_config_and_dns_config_merges(settings: DnsSettings) -> None:
    config = {
        "nameservers": ["198.51.100.1"],
        "searches": ["example.org"],
        "options": [{"name": "ndots", "value": "2"}, {"name": "single-request"}],
    }
    assert resolv_conf(pod(dnsPolicy="None", dnsConfig=config), settings) == (
        "nameserver 198.51.100.1\nsearch example.org\noptions ndots:2 single-request\n"
    )
    merged = resolv_conf(pod(dnsConfig=config), settings)
    assert "nameserver 10.43.0.10\nnameserver 198.51.100.1\n" in merged
    assert "options ndots:2 single-request" in merged


def test_resolv_conf_file_is_rewritten_only_on_change(
    settings: DnsSettings, tmp_path: Path
) -> None:
    path = write_resolv_conf(tmp_path / "pod", pod(), settings)
    stamp = path.stat().st_mtime_ns
    assert write_resolv_conf(tmp_path / "pod", pod(), settings).stat().st_mtime_ns == stamp
    assert path.read_text().startswith("nameserver 10.43.0.10")


SERVICES: list[Object] = [
    {
        "metadata": {"name": "kubernetes", "namespace": "default"},
        "spec": {"clusterIP": "10.43.0.1", "ports": [{"name": "https", "port": 443}]},
    },
    {
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {
            "clusterIP": "10.43.0.20",
            "ports": [
                {"name": "http", "port": 80, "protocol": "TCP"},
                {"name": "metrics", "port": 9100, "protocol": "UDP"},
            ],
        },
    },
    {"metadata": {"name": "db", "namespace": "shop"}, "spec": {"clusterIP": "None", "ports": []}},
    {"metadata": {"name": "other", "namespace": "elsewhere"}, "spec": {"clusterIP": "10.43.0.30"}},
]


def test_service_environment_variables() -> None:
    env = service_env(pod(), static_services(SERVICES))
    assert env["KUBERNETES_SERVICE_HOST"] == "10.43.0.1"
    assert env["KUBERNETES_SERVICE_PORT"] == "443"
    assert env["KUBERNETES_SERVICE_PORT_HTTPS"] == "443"
    assert env["WEB_SERVICE_HOST"] == "10.43.0.20"
    assert env["WEB_SERVICE_PORT"] == "80"
    assert env["WEB_SERVICE_PORT_HTTP"] == "80"
    assert env["WEB_PORT"] == "tcp://10.43.0.20:80"
    assert env["WEB_PORT_80_TCP"] == "tcp://10.43.0.20:80"
    assert env["WEB_PORT_80_TCP_PROTO"] == "tcp"
    assert env["WEB_PORT_80_TCP_PORT"] == "80"
    assert env["WEB_PORT_80_TCP_ADDR"] == "10.43.0.20"
    assert env["WEB_PORT_9100_UDP"] == "udp://10.43.0.20:9100"
    assert not any(k.startswith(("DB_", "OTHER_")) for k in env)
    only_master = service_env(pod(enableServiceLinks=False), static_services(SERVICES))
    assert {k.split("_", 1)[0] for k in only_master} == {"KUBERNETES"}


def test_a_containers_own_env_wins_and_may_refer_to_service_variables() -> None:
    ctx = PodContext(
        "n1", "10.42.0.5", "192.0.2.11", "sandbox", service_env={"WEB_SERVICE_HOST": "10.43.0.20"}
    )
    container = {
        "env": [
            {"name": "URL", "value": "http://$(WEB_SERVICE_HOST)/"},
            {"name": "WEB_SERVICE_HOST", "value": "mine"},
        ]
    }
    env = resolve_env(pod(), container, NoObjects(), ctx)
    assert env["URL"] == "http://10.43.0.20/"
    assert env["WEB_SERVICE_HOST"] == "mine"


class NoObjects:
    def config_map(self, namespace: str, name: str) -> dict[str, Any] | None:
        return None

    def secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        return None
