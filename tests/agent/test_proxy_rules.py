"""The service proxy's rules and transactions, with a recording stand-in for nft."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from k3py.cluster.agent.proxy import rules
from k3py.cluster.agent.proxy.model import HostPort, host_ports, service_ports
from k3py.cluster.agent.proxy.nft import FakeNftables
from k3py.cluster.agent.proxy.proxier import Proxier
from k3py.cluster.agent.proxy.rules import Existing, ProxyConfig, Redirect
from k3py.cluster.agent.proxy.source import ServiceCache

Object = dict[str, Any]
CONFIG = ProxyConfig(node_name="n1")


def service(
    name: str = "web",
    ip: str = "10.43.0.20",
    *,
    kind: str = "ClusterIP",
    node_port: int | None = None,
    **spec: Any,
) -> Object:
    port: Object = {"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}
    if node_port:
        port["nodePort"] = node_port
    return {
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"type": kind, "clusterIP": ip, "ports": [port], **spec},
    }


def endpoints(name: str = "web", *ips: tuple[str, str], not_ready: tuple[str, ...] = ()) -> Object:
    subset: Object = {
        "addresses": [{"ip": ip, "nodeName": node} for ip, node in ips],
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
    }
    if not_ready:
        subset["notReadyAddresses"] = [{"ip": ip} for ip in not_ready]
    return {"metadata": {"name": name, "namespace": "default"}, "subsets": [subset]}


THREE = (("10.42.0.5", "n1"), ("10.42.1.5", "n2"), ("10.42.2.5", "n3"))


def test_ready_endpoints_only_are_in_rotation() -> None:
    (sp,) = service_ports(service(), endpoints("web", *THREE, not_ready=("10.42.3.9",)))
    assert [e.ip for e in sp.endpoints] == ["10.42.0.5", "10.42.1.5", "10.42.2.5"]
    frag = rules.service_fragment(sp, CONFIG)
    # A plain service owns no chain: map elements lead to the chain shared by all services
    # with three endpoints, which picks one by its index.
    assert frag.chains == {}
    assert frag.picks == {3}
    assert frag.elements[(rules.SERVICE_IPS, "10.43.0.20 . tcp . 80")] == "goto svc-pick-3"
    picked = {k: v for (m, k), v in frag.elements.items() if m == "svc-endpoints-3"}
    assert picked == {
        "10.43.0.20 . tcp . 80 . 0": "10.42.0.5 . 8080",
        "10.43.0.20 . tcp . 80 . 1": "10.42.1.5 . 8080",
        "10.43.0.20 . tcp . 80 . 2": "10.42.2.5 . 8080",
    }
    assert "10.42.3.9" not in str(frag.elements)
    assert (rules.HAIRPIN, "10.42.1.5 . 10.42.1.5") in frag.elements


def test_pick_chain_lives_while_a_service_uses_it() -> None:
    (one,) = service_ports(service(), endpoints("web", *THREE))
    (two,) = service_ports(service("api", ip="10.43.0.21"), endpoints("api", *THREE))
    a, b = rules.service_fragment(one, CONFIG), rules.service_fragment(two, CONFIG)
    users = rules.set_element_users([a])
    batch = rules.diff(CONFIG, {"api": (None, b)}, users)
    assert "svc-pick-3" not in batch.replace("goto svc-pick-3", "")  # exists already
    batch = rules.diff(CONFIG, {"web": (a, None)}, users)
    assert "delete chain inet k3py svc-pick-3" not in batch  # api still uses it
    batch = rules.diff(CONFIG, {"api": (b, None)}, users)
    assert "delete chain inet k3py svc-pick-3" in batch
    assert "delete map inet k3py svc-endpoints-3" in batch
    assert not users
    batch = rules.diff(CONFIG, {"web": (None, a)}, users)
    assert batch.index("add chain inet k3py svc-pick-3") < batch.index("goto svc-pick-3")


def test_headless_and_external_name_services_are_not_proxied() -> None:
    assert service_ports(service(ip="None"), None) == []
    assert service_ports(service(kind="ExternalName", externalName="example.org"), None) == []


def test_service_without_endpoints_is_rejected_not_dropped() -> None:
    (sp,) = service_ports(service(kind="NodePort", node_port=30080), endpoints("web"))
    frag = rules.service_fragment(sp, CONFIG)
    assert frag.chains == {}
    assert frag.elements == {
        (rules.NO_ENDPOINT_IPS, "10.43.0.20 . tcp . 80"): "goto svc-reject",
        (rules.NO_ENDPOINT_PORTS, "tcp . 30080"): "goto svc-reject",
    }


def test_client_ip_affinity_uses_a_timed_set_per_endpoint() -> None:
    svc = service(
        sessionAffinity="ClientIP", sessionAffinityConfig={"clientIP": {"timeoutSeconds": 60}}
    )
    (sp,) = service_ports(svc, endpoints("web", *THREE))
    frag = rules.service_fragment(sp, CONFIG)
    assert len(frag.sets) == 3
    assert all("timeout 60s" in spec for spec in frag.sets.values())
    endpoint_chains = [c for c in frag.chains if c.startswith("svc-e-")]
    assert all(
        any(r.startswith("update @svc-affinity-") for r in frag.chains[c]) for c in endpoint_chains
    )


def test_node_port_and_load_balancer_masquerade_unless_local() -> None:
    lb = service(kind="LoadBalancer", node_port=30080)
    lb["status"] = {"loadBalancer": {"ingress": [{"ip": "192.0.2.11"}, {"ip": "192.0.2.12"}]}}
    (sp,) = service_ports(lb, endpoints("web", *THREE))
    frag = rules.service_fragment(sp, CONFIG)
    (ext,) = [c for c in frag.chains if c.startswith("svc-x-")]
    assert frag.chains[ext][0] == "jump svc-mark-for-masquerade"
    assert frag.elements[(rules.NODE_PORTS, "tcp . 30080")] == f"goto {ext}"
    assert frag.elements[(rules.SERVICE_IPS, "192.0.2.12 . tcp . 80")] == f"goto {ext}"

    lb["spec"]["externalTrafficPolicy"] = "Local"
    (sp,) = service_ports(lb, endpoints("web", *THREE))
    frag = rules.service_fragment(sp, CONFIG)
    (ext,) = [c for c in frag.chains if c.startswith("svc-x-")]
    assert "jump svc-mark-for-masquerade" not in frag.chains[ext]
    (local,) = [c for c in frag.chains if c.startswith("svc-l-")]
    assert frag.chains[local] == ("meta l4proto tcp dnat ip to 10.42.0.5:8080",)
    # No endpoint on this node: external traffic is dropped, as kube-proxy does.
    (sp,) = service_ports(lb, endpoints("web", ("10.42.1.5", "n2")))
    assert rules.service_fragment(sp, CONFIG).chains[ext][-1] == "drop"


def test_host_ports_of_a_pod() -> None:
    pod = {
        "spec": {"containers": [{"ports": [{"containerPort": 80, "hostPort": 8080}]}]},
        "status": {"podIP": "10.42.0.7"},
    }
    assert host_ports(pod) == [HostPort("tcp", 8080, "10.42.0.7", 80)]
    frag = rules.host_ports_fragment(host_ports(pod))
    assert frag.chains[rules.HOST_PORTS_CHAIN][-1].endswith("dnat ip to 10.42.0.7:80")


def test_diff_touches_only_the_changed_service_and_deletes_last() -> None:
    svc = service(sessionAffinity="ClientIP")
    (old,) = service_ports(svc, endpoints("web", *THREE))
    (new,) = service_ports(svc, endpoints("web", *THREE[:2]))
    old_frag, new_frag = rules.service_fragment(old, CONFIG), rules.service_fragment(new, CONFIG)
    users = rules.set_element_users([old_frag])
    lines = rules.diff(CONFIG, {old.key: (old_frag, new_frag)}, users).splitlines()
    ours = ("default/web/tcp/http", "svc-hairpin", "svc-affinity-")
    assert all(any(mark in line for mark in ours) for line in lines)
    gone = next(i for i, line in enumerate(lines) if line.startswith("delete chain"))
    assert "10.42.2.5" in lines[gone]
    assert all(not line.startswith("add") for line in lines[gone:])
    assert rules.diff(CONFIG, {old.key: (old_frag, old_frag)}) == ""


def test_full_ruleset_replaces_the_proxys_objects_only() -> None:
    existing = Existing(
        chains=("net-postrouting", "svc-s-old-default/gone/tcp/80"),
        sets=("svc-affinity-old",),
        maps=(rules.SERVICE_IPS,),
    )
    batch = rules.full_ruleset(CONFIG, [], existing).splitlines()
    assert batch[0] == "add table inet k3py"
    assert "flush chain inet k3py svc-s-old-default/gone/tcp/80" in batch
    assert f"delete map inet k3py {rules.SERVICE_IPS}" in batch
    assert "delete set inet k3py svc-affinity-old" in batch
    assert not any("net-postrouting" in line for line in batch)
    deletes = max(i for i, line in enumerate(batch) if line.startswith("delete"))
    assert batch.index(f"add map inet k3py {rules.SERVICE_IPS} {{ type ipv4_addr . inet_proto"
                       " . inet_service : verdict; }") > deletes  # fmt: skip


async def _settled(proxier: Proxier, generation: int) -> None:
    async with asyncio.timeout(5):
        await proxier.wait_applied(generation)


async def test_proxier_syncs_fully_then_only_changes() -> None:
    cache = ServiceCache()
    cache.set_service(service())
    cache.set_endpoints(endpoints("web", *THREE))
    cache.set_service(service("other", "10.43.0.21"))
    nft = FakeNftables()
    proxier = Proxier(cache, nft, CONFIG, redirect=Redirect("10.43.0.10", 53, "192.0.2.11", 53))
    task = asyncio.create_task(proxier.run())
    try:
        await _settled(proxier, 0)
        assert len(nft.batches) == 1
        assert "svc-cluster-dns" in nft.batches[0]
        assert "10.42.2.5" in nft.batches[0]

        seen: list[float] = []
        proxier.on_applied = seen.append
        cache.set_endpoints(endpoints("web", *THREE[:1]))
        await _settled(proxier, 1)
        change = nft.batches[-1]
        assert "default/other" not in change
        assert "delete element inet k3py svc-hairpin" in change
        assert "10.42.2.5" in change
        assert len(seen) == 1
        assert seen[0] < 1.0

        # A refused transaction falls back to replacing everything.
        nft.fail_next = True
        cache.delete_service("default/other")
        await _settled(proxier, 2)
        assert nft.batches[-1].startswith("add table inet k3py\n")
        assert "10.43.0.21" not in nft.batches[-1]
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_cluster_dns_address_is_redirected_not_proxied() -> None:
    cache = ServiceCache()
    dns = service("kube-dns", "10.43.0.10")
    dns["metadata"]["namespace"] = "kube-system"
    dns["spec"]["ports"] = [
        {"name": "dns", "port": 53, "protocol": "UDP"},
        {"name": "metrics", "port": 9153, "protocol": "TCP"},
    ]
    cache.set_service(dns)
    nft = FakeNftables()
    proxier = Proxier(cache, nft, CONFIG, redirect=Redirect("10.43.0.10", 53, "192.0.2.11", 53))
    await proxier.full_sync()
    (batch,) = nft.batches
    assert "10.43.0.10 . udp . 53 : goto svc-cluster-dns" in batch
    assert "10.43.0.10 . udp . 53 : goto svc-reject" not in batch
    # The Service's other ports have no endpoints: refused, as any such service.
    assert "10.43.0.10 . tcp . 9153 : goto svc-reject" in batch


async def test_service_cache_survives_a_restart(tmp_path: Any) -> None:
    path = tmp_path / "services.json"
    cache = ServiceCache(path)
    cache.set_service(
        {**service(), "metadata": {"name": "web", "namespace": "default", "managedFields": [1]}}
    )
    cache.set_endpoints(endpoints("web", *THREE))
    cache.save()
    again = ServiceCache(path)
    assert again.load() == 1
    assert again.service("default", "web") == cache.service("default", "web")
    assert "managedFields" not in str(again.services)
    assert again.endpoints_of("default", "web") == cache.endpoints_of("default", "web")


def test_shared_hairpin_elements_go_with_their_last_user() -> None:
    (web,) = service_ports(service(), endpoints("web", *THREE))
    (api,) = service_ports(service("api", "10.43.0.21"), endpoints("api", *THREE[:1]))
    web_frag, api_frag = rules.service_fragment(web, CONFIG), rules.service_fragment(api, CONFIG)
    users = rules.set_element_users([web_frag, api_frag])
    batch = rules.diff(CONFIG, {web.key: (web_frag, None)}, users)
    assert "svc-hairpin { 10.42.1.5 . 10.42.1.5, 10.42.2.5 . 10.42.2.5 }" in batch
    assert "10.42.0.5 . 10.42.0.5" not in batch  # api still sends to 10.42.0.5
    batch = rules.diff(CONFIG, {api.key: (api_frag, None)}, users)
    assert "delete element inet k3py svc-hairpin { 10.42.0.5 . 10.42.0.5 }" in batch
    assert not users
